package conformance

// Running kpeer's mode app (conformance/internal/kpeer/app.go), the kernel
// MPTCP peer that behaves like an application, from the namespace tests:
// start it, learn its listening address, collect its final report.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mptund/mptund/internal/netns"
)

// appPeerConfig is the command line of one kpeer app run.
type appPeerConfig struct {
	Listen, Connect string // exactly one
	Send, Expect    int64
	Seed            uint64
	Reader          string // copy, bulk, poll
	Pauses          int
	PauseMin        time.Duration
	PauseMax        time.Duration
	Close           string // first, last
	Plain           bool
	Timeout         time.Duration
}

func (c appPeerConfig) args() []string {
	a := []string{"app"}
	if c.Listen != "" {
		a = append(a, "-listen", c.Listen)
	} else {
		a = append(a, "-connect", c.Connect)
	}
	a = append(a, "-send", strconv.FormatInt(c.Send, 10), "-expect", strconv.FormatInt(c.Expect, 10),
		"-seed", strconv.FormatUint(c.Seed, 10))
	if c.Reader != "" {
		a = append(a, "-reader", c.Reader)
	}
	if c.Pauses > 0 {
		a = append(a, "-pauses", strconv.Itoa(c.Pauses))
	}
	if c.PauseMin > 0 {
		a = append(a, "-pause-min", c.PauseMin.String())
	}
	if c.PauseMax > 0 {
		a = append(a, "-pause-max", c.PauseMax.String())
	}
	if c.Close != "" {
		a = append(a, "-close", c.Close)
	}
	if c.Plain {
		a = append(a, "-plain")
	}
	if c.Timeout > 0 {
		a = append(a, "-timeout", c.Timeout.String())
	}
	return a
}

// appPeerReport is kpeer app's final line (event "done").
type appPeerReport struct {
	Event      string `json:"event"`
	Role       string `json:"role"`
	Local      string `json:"local"`
	Remote     string `json:"remote"`
	Multipath  bool   `json:"multipath"`
	Seed       uint64 `json:"seed"`
	Sent       int64  `json:"sent"`
	SentSHA256 string `json:"sent_sha256"`
	Recv       int64  `json:"recv"`
	RecvSHA256 string `json:"recv_sha256"`
	Pauses     []struct {
		At int64 `json:"at"`
		MS int64 `json:"ms"`
	} `json:"pauses"`
	ReadErr   string `json:"read_err"`
	WriteErr  string `json:"write_err"`
	CloseErr  string `json:"close_err"`
	Timeout   bool   `json:"timeout"`
	ElapsedMS int64  `json:"elapsed_ms"`
	Addr      string `json:"addr"` // event "listening"
}

// appPeer is a running kpeer app.
type appPeer struct {
	cmd    *exec.Cmd
	events chan appPeerReport
	done   chan struct{} // closed after exit
	cancel context.CancelFunc

	mu     sync.Mutex
	stderr strings.Builder
	bad    []string // undecodable stdout lines
}

// startAppPeer runs kpeer app in ns. It is killed at cleanup if it still
// runs; the process itself gives up after cfg.Timeout.
func startAppPeer(t *testing.T, ns *netns.NS, cfg appPeerConfig) *appPeer {
	t.Helper()
	limit := cfg.Timeout
	if limit == 0 {
		limit = 60 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit+10*time.Second)
	p := &appPeer{events: make(chan appPeerReport, 8), done: make(chan struct{}), cancel: cancel}
	p.cmd = ns.Command(ctx, kpeer(t), cfg.args()...)
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	p.cmd.Stderr = &lockedWriter{mu: &p.mu, w: &p.stderr}
	if err := p.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("kpeer app: %v", err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			var e appPeerReport
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				p.mu.Lock()
				p.bad = append(p.bad, sc.Text())
				p.mu.Unlock()
				continue
			}
			select {
			case p.events <- e:
			default: // only the first few events matter
			}
		}
		_ = p.cmd.Wait()
		close(p.events)
		close(p.done)
	}()
	t.Cleanup(p.stop)
	return p
}

// stop kills the process if it still runs and waits for it.
func (p *appPeer) stop() {
	p.cancel()
	<-p.done
}

// next returns the next event named want, skipping others; ok is false if
// the process ended or timeout passed first.
func (p *appPeer) next(want string, timeout time.Duration) (appPeerReport, error) {
	deadline := time.After(timeout)
	for {
		select {
		case e, ok := <-p.events:
			if !ok {
				return appPeerReport{}, fmt.Errorf("kpeer exited (%v) before %q: %s", p.cmd.ProcessState, want, p.stderrText())
			}
			if e.Event == want {
				return e, nil
			}
		case <-deadline:
			return appPeerReport{}, fmt.Errorf("kpeer: no %q event within %v", want, timeout)
		}
	}
}

func (p *appPeer) stderrText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.TrimSpace(p.stderr.String() + strings.Join(p.bad, "\n"))
}
