package tests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/gyrehq/gyre/events"
	gyrev1 "github.com/gyrehq/gyre/events/gyrev1"
	"github.com/gyrehq/gyre/libs/bus"
)

// chromium returns the browser to drive: $GYRE_CHROMIUM, else chromium on
// PATH (see requireTool).
func chromium(t *testing.T) string {
	t.Helper()
	return requireTool(t, "GYRE_CHROMIUM", "chromium", "apt-get install chromium")
}

// TestDashboardInBrowser opens the dashboard of `gyre up` in headless
// Chromium while the real loop runs on Elec2, and checks what a person
// would see: the pipeline's card fills in as the model is trained and
// deployed, without a reload; a click on a cascade narrows the feed to its
// events; and a producer's string is shown as text, never run as markup.
func TestDashboardInBrowser(t *testing.T) {
	browser := chromium(t)
	js, httpURL, upDir := upOnServer(t)
	// The address gyre up prints: the read token in the fragment.
	token, err := os.ReadFile(filepath.Join(upDir, "dashboard.token"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	actx, acancel := chromedp.NewExecAllocator(ctx, append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.UserDataDir(filepath.Join(dir, "chromium")))...)
	defer acancel()
	bctx, bcancel := chromedp.NewContext(actx, chromedp.WithErrorf(t.Logf))
	defer bcancel()

	// The page is open before the loop starts: what follows arrives live.
	if err := chromedp.Do(bctx,
		chromedp.Navigate(httpURL+"/services/dashboard/#token="+strings.TrimSpace(string(token))),
		chromedp.WaitVisible(chromedp.CSS(`#no-pipelines`)),
		waitText(`#conn-text`, "live"),
	); err != nil {
		t.Fatalf("open the dashboard: %v", err)
	}

	feedElec2(ctx, t, js)
	completed := waitEvent(t, js, "elec2", events.DeploymentCompleted, 3*time.Minute)
	// Once the loop has run, the page has a minute to show each thing.
	within := func() context.Context {
		c, cancel := context.WithTimeout(bctx, time.Minute)
		t.Cleanup(cancel)
		return c
	}
	card := `.card[data-pipeline="elec2"]`
	if err := chromedp.Do(within(),
		waitText(card+` [data-field="serving"]`, "v1"),
		waitText(card+` [data-field="rollout"]`, "completed"),
		waitText(card+` [data-field="training"]`, "completed"),
		waitText(card+` [data-field="evaluation"]`, "blessed"),
		waitText(card+` [data-field="batches"]`, "valid"),
		chromedp.WaitVisible(chromedp.CSS(`#feed tr[data-type="deployment.completed"]`)),
	); err != nil {
		t.Fatalf("the card after the loop: %v\n%s", err, pageText(bctx))
	}

	// A click on the deployment's cascade shows that cascade only: from the
	// batch that started it to the deployment.
	cascade := bus.Ext(completed, bus.ExtCorrelationID)
	if err := chromedp.Do(within(),
		chromedp.Click(chromedp.CSS(`#feed tr[data-type="deployment.completed"] a.cid`)),
		chromedp.WaitVisible(chromedp.CSS(`#f-cascade-chip`)),
	); err != nil {
		t.Fatalf("filter by cascade: %v", err)
	}
	shown, err := chromedp.Run(bctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("#feed tr.entry a.cid")].map(a => a.title)`))
	if err != nil {
		t.Fatalf("the cascade's rows: %v", err)
	}
	if len(shown) < 3 {
		t.Errorf("the cascade shows %d events, want the loop's (batch to deployment): %v", len(shown), shown)
	}
	for _, title := range shown {
		if !strings.HasSuffix(title, cascade) {
			t.Errorf("a row of another cascade is shown: %q (want %s)", title, cascade)
		}
	}

	// A producer's string with markup in it: shown as text, not run.
	reject, err := events.New("/gyre/test", "elec2", &gyrev1.DataBatchRejected{Pipeline: "elec2", BatchId: "evil", Rows: 1,
		ReasonsTotal: 1, Reasons: []*gyrev1.RejectReason{{Column: "nswprice", Row: 1, Rule: "format",
			Message: `<img src=x onerror="window.__xss=1">`}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.NewPublisher(js, "test").Publish(ctx, reject); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(within(),
		chromedp.Click(chromedp.CSS(`#f-cascade-chip`)),
		waitText(card+` [data-field="batches"]`, `<img src=x onerror="window.__xss=1">`),
		waitText(`#feed tr[data-type="data.batch.rejected"] .summary`, "batch evil rejected"),
	); err != nil {
		t.Fatalf("a rejected batch, live: %v\n%s", err, pageText(bctx))
	}
	ran, err := chromedp.Run(bctx, chromedp.Evaluate[bool](`window.__xss === 1`))
	if err != nil {
		t.Fatal(err)
	}
	if ran {
		t.Error("markup in an event's payload ran in the page")
	}
}

// waitText waits until the element's text contains want.
func waitText(sel, want string) chromedp.Action[chromedp.Void] {
	expr := fmt.Sprintf(`(() => { const n = document.querySelector(%q); return n ? n.textContent : ""; })()`, sel)
	return func(ctx context.Context, tgt *chromedp.Target) (chromedp.Void, error) {
		for {
			got, err := chromedp.Evaluate[string](expr)(ctx, tgt)
			if err != nil {
				return chromedp.Void{}, err
			}
			if strings.Contains(got, want) {
				return chromedp.Void{}, nil
			}
			select {
			case <-ctx.Done():
				return chromedp.Void{}, fmt.Errorf("%s: text %q does not contain %q: %w", sel, got, want, ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// pageText is the page's text, for a failure message.
func pageText(ctx context.Context) string {
	tctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	text, _ := chromedp.Run(tctx, chromedp.Evaluate[string](`document.body.innerText`))
	return text
}
