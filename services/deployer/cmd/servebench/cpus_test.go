package main

import (
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseCPUList(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want cpuList
		err  string
	}{
		{in: "1", want: cpuList{1}},
		{in: "0-3,6", want: cpuList{0, 1, 2, 3, 6}},
		{in: "6, 2-3,3", want: cpuList{2, 3, 6}},
		{in: "x", err: `"x" is not a CPU number or range`},
		{in: "3-1", err: `"3-1" is not a CPU range`},
		{in: "-1", err: `"-1" is not a CPU number or range`},
		{in: "", err: `"" is not a CPU number`},
	} {
		got, err := parseCPUList(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseCPUList(%q) = %v, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got, tc.want) {
			t.Errorf("parseCPUList(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestResolvePlacement(t *testing.T) {
	t.Parallel()
	allowed, err := allowedCPUs()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		server, load string
		want         placement
		err          string
	}{
		{server: "none", load: "auto"},
		{server: "none", load: "none"},
		{server: "5", load: "0-2", want: placement{server: cpuList{5}, load: cpuList{0, 1, 2}}},
		{server: "none", load: "0", err: "--load-cpus 0 needs --server-cpus"},
		{server: "1-2", load: "2", err: "share CPU 2"},
		{server: "1", load: "none", err: "--load-cpus none"},
		{server: "a", load: "auto", err: "--server-cpus:"},
		{server: "1", load: "b", err: "--load-cpus:"},
		{server: allowed.String(), load: "auto", err: "none is left for wrk"},
	} {
		got, err := resolvePlacement(tc.server, tc.load)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("resolvePlacement(%q, %q) = %v, %v; want error %q", tc.server, tc.load, got, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(got.server, tc.want.server) || !slices.Equal(got.load, tc.want.load) {
			t.Errorf("resolvePlacement(%q, %q) = %v, %v; want %v", tc.server, tc.load, got, err, tc.want)
		}
	}
	// auto splits what this process may use, the servers taking the upper
	// half, or pins nothing on one CPU.
	got, err := resolvePlacement("auto", "auto")
	if err != nil {
		t.Fatal(err)
	}
	if len(allowed) < 2 {
		if got.pinned() {
			t.Fatalf("one CPU (%v): placement %v, want none", allowed, got)
		}
		return
	}
	if !slices.Equal(slices.Sorted(slices.Values(append(slices.Clone(got.load), got.server...))), allowed) ||
		len(got.server) != len(allowed)-len(allowed)/2 {
		t.Fatalf("auto on CPUs %v: servers %v, load %v", allowed, got.server, got.load)
	}
}

// TestResolvePlacementOneCPU runs the placement on a thread allowed one CPU:
// auto pins nothing there, and an explicit --load-cpus, which it could not
// honour, is refused rather than ignored.
func TestResolvePlacementOneCPU(t *testing.T) {
	allowed, err := allowedCPUs()
	if err != nil {
		t.Fatal(err)
	}
	// allowedCPUs reads the calling thread's affinity: keep this goroutine
	// on one thread and narrow that thread's CPUs. The thread ends with the
	// goroutine (no UnlockOSThread), so nothing else runs on it afterwards.
	runtime.LockOSThread()
	var one unix.CPUSet
	one.Set(allowed[0])
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		t.Fatal(err)
	}
	got, err := resolvePlacement("auto", "auto")
	if err != nil || got.pinned() {
		t.Errorf("auto, auto on one CPU: %v, %v; want no pinning", got, err)
	}
	load := strconv.Itoa(allowed[0])
	if got, err := resolvePlacement("auto", load); err == nil || !strings.Contains(err.Error(), "--load-cpus "+load+": this process may use one CPU") {
		t.Errorf("auto, %s on one CPU: %v, %v; want an error naming --load-cpus", load, got, err)
	}
}
