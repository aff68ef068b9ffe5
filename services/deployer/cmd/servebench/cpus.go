package main

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The servers and the load are kept on separate CPUs by default: when wrk
// and the JetStream process share the servers' cores, a run measures how
// the kernel shares them as much as the servers, the servers' CPU per
// request rises by half (cache and wake-ups across the shared cores), and
// the same run moves by a fifth from one minute to the next.

// cpuList is a set of CPU numbers, ascending, as taskset -c takes them.
type cpuList []int

// String formats l for taskset -c: "0,1,2".
func (l cpuList) String() string {
	parts := make([]string, len(l))
	for i, c := range l {
		parts[i] = strconv.Itoa(c)
	}
	return strings.Join(parts, ",")
}

// parseCPUList reads "0-3,6" (ranges and single CPUs, comma-separated).
func parseCPUList(s string) (cpuList, error) {
	var out cpuList
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		lo, hi, isRange := strings.Cut(f, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return nil, fmt.Errorf("%q is not a CPU number or range (0-3)", f)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("%q is not a CPU range (0-3)", f)
			}
		}
		for c := a; c <= b; c++ {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// allowedCPUs returns the CPUs this process may run on.
func allowedCPUs() (cpuList, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("reading this process's CPUs: %w", err)
	}
	var out cpuList
	for c := range len(set) * 64 {
		if set.IsSet(c) {
			out = append(out, c)
		}
	}
	return out, nil
}

// placement says which CPUs the servers and the load run on; empty lists
// leave both to the kernel.
type placement struct {
	server, load cpuList
}

func (p placement) pinned() bool { return len(p.server) > 0 }

// resolvePlacement turns --server-cpus and --load-cpus into CPU lists.
// "auto" gives the servers the upper half of the CPUs this process may
// use and the load the rest; "none" pins nothing.
func resolvePlacement(server, load string) (placement, error) {
	if server == "none" {
		if load != "auto" && load != "none" {
			return placement{}, fmt.Errorf("--load-cpus %s needs --server-cpus too (it is none)", load)
		}
		return placement{}, nil
	}
	allowed, err := allowedCPUs()
	if err != nil {
		return placement{}, err
	}
	var p placement
	if server == "auto" {
		if len(allowed) < 2 {
			// One CPU: nothing to keep apart, and no CPU for the load alone.
			if load != "auto" && load != "none" {
				return placement{}, fmt.Errorf("--load-cpus %s: this process may use one CPU (%s), which --server-cpus auto leaves to the servers and the load to share; give --server-cpus too, or leave --load-cpus out", load, allowed)
			}
			return placement{}, nil
		}
		p.server = allowed[len(allowed)/2:]
	} else if p.server, err = parseCPUList(server); err != nil {
		return placement{}, fmt.Errorf("--server-cpus: %w", err)
	}
	switch load {
	case "none":
		return placement{}, fmt.Errorf("--load-cpus none: with --server-cpus %s the load needs CPUs of its own (auto: the others)", server)
	case "auto":
		for _, c := range allowed {
			if !slices.Contains(p.server, c) {
				p.load = append(p.load, c)
			}
		}
		if len(p.load) == 0 {
			return placement{}, fmt.Errorf("--server-cpus %s takes every CPU this process may use (%s): none is left for wrk; give --load-cpus", server, allowed)
		}
	default:
		if p.load, err = parseCPUList(load); err != nil {
			return placement{}, fmt.Errorf("--load-cpus: %w", err)
		}
	}
	for _, c := range p.load {
		if slices.Contains(p.server, c) {
			return placement{}, fmt.Errorf("--server-cpus %s and --load-cpus %s share CPU %d", p.server, p.load, c)
		}
	}
	return p, nil
}

// pinSelf makes this process run on the servers' CPUs from its start: it
// replaces itself with taskset -c SERVER running the same command, the
// placement spelt out, so that every thread, and the GOMAXPROCS the Go
// runtime derives from them, follow. It returns (having done nothing) when
// the process runs on those CPUs already, or on some of them: the kernel
// leaves out CPUs that are offline, and the check must not exec again.
func pinSelf(p placement, args []string) error {
	allowed, err := allowedCPUs()
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(allowed, func(c int) bool { return !slices.Contains(p.server, c) }) {
		return nil
	}
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		return fmt.Errorf("taskset (util-linux) is needed to pin the servers to --server-cpus, or give --server-cpus none: %w", err)
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	argv := append([]string{"taskset", "-c", p.server.String(), exe}, args...)
	argv = append(argv, "--server-cpus", p.server.String(), "--load-cpus", p.load.String())
	return syscall.Exec(taskset, argv, os.Environ())
}

// loadCommand returns the command that runs name with args on the load's
// CPUs (wrk, the JetStream process).
func loadCommand(p placement, name string, args ...string) (string, []string) {
	if len(p.load) == 0 {
		return name, args
	}
	return "taskset", append([]string{"-c", p.load.String(), name}, args...)
}
