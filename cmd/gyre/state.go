package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// stateFile is the name, under the data directory, of the file in which a
// running `gyre up` says where it is, so that client commands find it.
const stateFile = "up.json"

// upState is the content of <data-dir>/up.json.
type upState struct {
	PID       int       `json:"pid"`
	NATSURL   string    `json:"natsURL"`
	HTTPURL   string    `json:"httpURL"`
	StartedAt time.Time `json:"startedAt"`
	// NATSSeed is the admin's NATS seed, which client commands connect
	// with; empty when the server needs none.
	NATSSeed string `json:"natsSeed,omitempty"`
}

func statePath(dataDir string) string { return filepath.Join(dataDir, stateFile) }

// writeState writes the state file atomically: a reader sees the old file or
// the new one, never half of one.
func writeState(dataDir string, st upState) error {
	body, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dataDir, stateFile+".*")
	if err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	_, werr := tmp.Write(append(body, '\n'))
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write state file: %w", err)
	}
	if err := os.Rename(tmp.Name(), statePath(dataDir)); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write state file: %w", err)
	}
	return nil
}

// readState reads <data-dir>/up.json; the error wraps fs.ErrNotExist when
// there is none.
func readState(dataDir string) (upState, error) {
	var st upState
	body, err := os.ReadFile(statePath(dataDir))
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(body, &st); err != nil {
		return st, fmt.Errorf("%s: %w", statePath(dataDir), err)
	}
	return st, nil
}

// processAlive reports whether a process with the given pid exists (signal 0
// checks without signalling).
func processAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
