// Package routing makes and unmakes the host network configuration that
// mptund's daemons need around their TUN devices: policy routing rules
// and tables, forwarding and reverse-path sysctls, and an nftables table
// for source and destination NAT and forwarding filters.
//
// Every change is recorded with the command that reverses it, in memory
// and in a state file, before the next change is made. Close reverses
// them in the opposite order. If the process dies without Close, the next
// Setup with the same state file finds the record of the dead process and
// reverses it first, so nothing is left behind for long.
//
// The commands are iproute2's ip, nft and sysctl files under
// /proc/sys; they act in the network namespace of the calling process.
package routing

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
)

// step is one change and how to reverse it.
type step struct {
	// Undo is a command (argv), or, when Sysctl is set, the value to
	// write back.
	Undo   []string `json:"undo,omitempty"`
	Sysctl string   `json:"sysctl,omitempty"`
	Value  string   `json:"value,omitempty"`
}

// state is what the state file holds.
type state struct {
	PID int `json:"pid"`
	// NetNS identifies the network namespace the changes were made in.
	NetNS string `json:"netns"`
	Steps []step `json:"steps"`
}

// Setup is a set of changes to the host. Safe for concurrent use.
type Setup struct {
	mu    sync.Mutex
	steps []step
	file  string // "" for none
	logf  func(format string, args ...any)
}

// New returns an empty Setup recording to stateFile (empty: no file).
// When the file holds the record of a process that no longer runs, its
// changes are reversed first. logf, if not nil, receives every command.
func New(stateFile string, logf func(string, ...any)) (*Setup, error) {
	s := &Setup{file: stateFile, logf: logf}
	if stateFile == "" {
		return s, nil
	}
	if err := os.MkdirAll(filepath.Dir(stateFile), 0o755); err != nil {
		return nil, err
	}
	if b, err := os.ReadFile(stateFile); err == nil {
		var st state
		if json.Unmarshal(b, &st) == nil && st.PID != os.Getpid() {
			if st.PID > 0 && syscall.Kill(st.PID, 0) == nil {
				return nil, fmt.Errorf("routing: %s belongs to running process %d", stateFile, st.PID)
			}
			if st.NetNS != NetNS() {
				// Made in another namespace: nothing to undo here.
				st.Steps = nil
			}
			old := &Setup{steps: st.Steps, logf: logf}
			if err := old.undoAll(); err != nil && logf != nil {
				logf("routing: cleaning up after process %d: %v", st.PID, err)
			}
		}
	}
	return s, s.save()
}

func (s *Setup) log(format string, args ...any) {
	if s.logf != nil {
		s.logf(format, args...)
	}
}

// save writes the state file (called with mu held or before use).
func (s *Setup) save() error {
	if s.file == "" {
		return nil
	}
	b, _ := json.Marshal(state{PID: os.Getpid(), NetNS: NetNS(), Steps: s.steps})
	tmp := s.file + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, s.file)
}

func (s *Setup) push(st step) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.steps = append(s.steps, st)
	return s.save()
}

// Do runs the command do and, once it succeeded, records undo (nil: the
// change needs no reversal).
func (s *Setup) Do(do []string, undo []string) error {
	if err := s.run(do); err != nil {
		return err
	}
	if undo == nil {
		return nil
	}
	return s.push(step{Undo: undo})
}

func (s *Setup) run(argv []string) error {
	s.log("+ %s", strings.Join(argv, " "))
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(argv, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// IP runs "ip args..." and records the reversal built by replacing the
// verb "add" (or "replace") with "del".
func (s *Setup) IP(args ...string) error {
	undo := []string{"ip"}
	found := false
	for _, a := range args {
		if !found && (a == "add" || a == "replace") {
			a, found = "del", true
		}
		undo = append(undo, a)
	}
	if !found {
		return fmt.Errorf("routing: ip %s: no add verb to reverse", strings.Join(args, " "))
	}
	return s.Do(append([]string{"ip"}, args...), undo)
}

// Sysctl sets /proc/sys/KEY (dots or slashes) and records the old value.
// Setting the value it already has records nothing.
func (s *Setup) Sysctl(key, value string) error {
	p := sysctlPath(key)
	old, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("routing: sysctl %s: %w", key, err)
	}
	o := strings.TrimSpace(string(old))
	if o == value {
		return nil
	}
	s.log("+ sysctl %s=%s (was %s)", key, value, o)
	if err := os.WriteFile(p, []byte(value), 0o644); err != nil {
		return fmt.Errorf("routing: sysctl %s=%s: %w", key, value, err)
	}
	return s.push(step{Sysctl: key, Value: o})
}

// ReadSysctl returns the value of a sysctl.
func ReadSysctl(key string) (string, error) {
	b, err := os.ReadFile(sysctlPath(key))
	return strings.TrimSpace(string(b)), err
}

func sysctlPath(key string) string {
	// Interface names may contain dots: only the separators before the
	// name are dots in the key (net.ipv4.conf.NAME.forwarding).
	parts := strings.Split(key, ".")
	if len(parts) >= 5 && parts[0] == "net" && parts[2] == "conf" {
		name := strings.Join(parts[3:len(parts)-1], ".")
		return filepath.Join("/proc/sys/net", parts[1], "conf", name, parts[len(parts)-1])
	}
	return filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
}

// Nft loads an nftables table (the whole "table FAMILY NAME { ... }"
// text) and records its deletion.
func (s *Setup) Nft(family, name, body string) error {
	text := fmt.Sprintf("table %s %s {\n%s\n}\n", family, name, body)
	s.log("+ nft -f - <<%s", text)
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(text)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft: loading table %s %s: %v: %s", family, name, err, strings.TrimSpace(string(out)))
	}
	return s.push(step{Undo: []string{"nft", "delete", "table", family, name}})
}

// Close reverses every change, newest first, and removes the state file.
// It tries every reversal and returns their errors joined.
func (s *Setup) Close() error {
	err := s.undoAll()
	if s.file != "" {
		if rerr := os.Remove(s.file); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
	}
	return err
}

func (s *Setup) undoAll() error {
	s.mu.Lock()
	steps := s.steps
	s.steps = nil
	s.mu.Unlock()
	var errs []error
	for i := len(steps) - 1; i >= 0; i-- {
		st := steps[i]
		if st.Sysctl != "" {
			s.log("- sysctl %s=%s", st.Sysctl, st.Value)
			if err := os.WriteFile(sysctlPath(st.Sysctl), []byte(st.Value), 0o644); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
			continue
		}
		s.log("- %s", strings.Join(st.Undo, " "))
		out, err := exec.Command(st.Undo[0], st.Undo[1:]...).CombinedOutput()
		if err != nil && !gone(string(out)) {
			errs = append(errs, fmt.Errorf("%s: %v: %s", strings.Join(st.Undo, " "), err, strings.TrimSpace(string(out))))
		}
	}
	s.mu.Lock()
	_ = s.save()
	s.mu.Unlock()
	return errors.Join(errs...)
}

// gone reports whether a failed reversal failed because the thing is
// already gone (its device removed, for instance).
func gone(out string) bool {
	for _, s := range []string{"No such file", "Cannot find device", "No such process", "does not exist", "not found"} {
		if strings.Contains(out, s) {
			return true
		}
	}
	return false
}

// Steps returns how many changes are recorded.
func (s *Setup) Steps() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.steps)
}

// NetNS identifies the calling thread's network namespace
// ("net:[INODE]").
func NetNS() string {
	l, _ := os.Readlink("/proc/thread-self/ns/net")
	return l
}

// StateFile returns the state file for a daemon of role with the given
// tag in dir, unique per network namespace: a daemon finds the record of
// its dead predecessor in the same namespace, and never one made
// elsewhere.
func StateFile(dir, role, tag string) string {
	ns := strings.Trim(strings.TrimPrefix(NetNS(), "net:"), "[]")
	return filepath.Join(dir, role+"-"+ns+"-"+tag+".json")
}
