package main

// Mode "app": a kernel MPTCP peer that behaves like a real application
// rather than a benchmark. It sends its own seeded bytes while it reads the
// peer's (both directions at once), can stop reading at random points for
// a while and then read in large bulks (a program that is busy elsewhere,
// then drains its socket with big reads), can read with a plain poll(2)
// loop instead of Go's netpoller, and chooses when to half-close: as soon
// as its data is written (it closes first) or only after the peer's end of
// stream (it closes last).
//
//	kpeer app (-listen ADDR:PORT | -connect ADDR:PORT) [-local ADDR]
//	          [-send N] [-expect N] [-seed S] [-reader copy|bulk|poll]
//	          [-pauses K] [-pause-min D] [-pause-max D]
//	          [-bulk-min N] [-bulk-max N] [-close first|last]
//	          [-plain] [-timeout D]
//
// Everything random (the bytes sent, where the reader pauses and for how
// long, the bulk read sizes) comes from -seed, so a failing run is
// replayed by passing the seed it printed. The final line is a JSON report
// (event "done") with the bytes and SHA-256 of what was sent and received,
// the pauses taken and the errors seen; on -timeout the same report is
// printed with "timeout": true and the exit status is 3.

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"flag"
	"hash"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// pause is one stop of the reader: after At bytes it did not read for MS
// milliseconds.
type pause struct {
	At int64 `json:"at"`
	MS int64 `json:"ms"`
}

// appReport is the final JSON line of mode app.
type appReport struct {
	Event      string  `json:"event"`
	Role       string  `json:"role"`
	Local      string  `json:"local,omitempty"`
	Remote     string  `json:"remote,omitempty"`
	Multipath  bool    `json:"multipath"`
	Seed       uint64  `json:"seed"`
	Reader     string  `json:"reader"`
	Close      string  `json:"close"`
	Sent       int64   `json:"sent"`
	SentSHA256 string  `json:"sent_sha256"`
	Recv       int64   `json:"recv"`
	RecvSHA256 string  `json:"recv_sha256"`
	Pauses     []pause `json:"pauses,omitempty"`
	ReadErr    string  `json:"read_err,omitempty"`
	WriteErr   string  `json:"write_err,omitempty"`
	CloseErr   string  `json:"close_err,omitempty"`
	Timeout    bool    `json:"timeout,omitempty"`
	ElapsedMS  int64   `json:"elapsed_ms"`
}

type appConfig struct {
	listen, connect, local string
	send, expect           int64
	seed                   uint64
	reader                 string
	pauses                 int
	pauseMin, pauseMax     time.Duration
	bulkMin, bulkMax       int
	closeMode              string
	plain                  bool
	timeout                time.Duration
}

func app(args []string) {
	fs := flag.NewFlagSet("kpeer app", flag.ExitOnError)
	var cfg appConfig
	fs.StringVar(&cfg.listen, "listen", "", "accept one connection on ADDR:PORT")
	fs.StringVar(&cfg.connect, "connect", "", "connect to ADDR:PORT")
	fs.StringVar(&cfg.local, "local", "", "local address to bind when connecting")
	fs.Int64Var(&cfg.send, "send", 0, "bytes to send (seeded pseudo-random)")
	fs.Int64Var(&cfg.expect, "expect", 0, "bytes the peer is expected to send: pauses are placed within them")
	fs.Uint64Var(&cfg.seed, "seed", 1, "seed of the data, the pauses and the bulk sizes")
	fs.StringVar(&cfg.reader, "reader", "copy", "how to read: copy (64 KiB reads), bulk (reads of -bulk-min..-bulk-max bytes, each filled completely), poll (poll(2) and recv loop)")
	fs.IntVar(&cfg.pauses, "pauses", 0, "times the reader stops reading, at random offsets within -expect")
	fs.DurationVar(&cfg.pauseMin, "pause-min", 100*time.Millisecond, "shortest pause")
	fs.DurationVar(&cfg.pauseMax, "pause-max", 2*time.Second, "longest pause")
	fs.IntVar(&cfg.bulkMin, "bulk-min", 1<<20, "smallest bulk read")
	fs.IntVar(&cfg.bulkMax, "bulk-max", 4<<20, "largest bulk read")
	fs.StringVar(&cfg.closeMode, "close", "first", "first: half-close as soon as everything is written; last: half-close after the peer's end of stream")
	fs.BoolVar(&cfg.plain, "plain", false, "plain TCP instead of MPTCP")
	fs.DurationVar(&cfg.timeout, "timeout", 60*time.Second, "give up after this long (report, exit status 3)")
	_ = fs.Parse(args)
	if (cfg.listen == "") == (cfg.connect == "") {
		fail("app: exactly one of -listen and -connect is required")
	}
	switch cfg.reader {
	case "copy", "bulk", "poll":
	default:
		fail("app: -reader %q: want copy, bulk or poll", cfg.reader)
	}
	if cfg.closeMode != "first" && cfg.closeMode != "last" {
		fail("app: -close %q: want first or last", cfg.closeMode)
	}
	if cfg.bulkMin < 1 || cfg.bulkMax < cfg.bulkMin || cfg.pauseMax < cfg.pauseMin || cfg.pauseMin < 0 {
		fail("app: bad -bulk-min/-bulk-max or -pause-min/-pause-max")
	}
	if cfg.send < 0 || cfg.expect < 0 || cfg.pauses < 0 {
		fail("app: negative -send, -expect or -pauses")
	}
	os.Exit(runApp(&cfg))
}

// seededRand returns the PRNG of one use (stream) of the seed, so that the
// data does not depend on how many pauses were drawn, and so on.
func seededRand(seed uint64, stream byte) *rand.ChaCha8 {
	var k [32]byte
	binary.LittleEndian.PutUint64(k[:], seed)
	k[8], k[9], k[10], k[11] = 'k', 'p', 'e', stream
	return rand.NewChaCha8(k)
}

// appData returns the n bytes mode app sends with the given seed: the
// ChaCha8 stream of seededRand(seed, 'd'). Tests regenerate it to know
// what to expect.
func appData(seed uint64) io.Reader { return seededRand(seed, 'd') }

// counter counts bytes and hashes them; safe to read concurrently.
type counter struct {
	n atomic.Int64
	h hash.Hash
}

func runApp(cfg *appConfig) int {
	start := time.Now()
	rep := &appReport{Event: "done", Seed: cfg.seed, Reader: cfg.reader, Close: cfg.closeMode}
	c, err := appConn(cfg, rep)
	if err != nil {
		fail("%v", err)
	}
	tc := c.(*net.TCPConn)
	rep.Local, rep.Remote, rep.Multipath = c.LocalAddr().String(), c.RemoteAddr().String(), isMultipath(c)
	emit(map[string]any{"event": "connected", "local": rep.Local, "remote": rep.Remote, "multipath": rep.Multipath})

	sent := &counter{h: sha256.New()}
	recv := &counter{h: sha256.New()}
	var mu sync.Mutex // guards rep's error fields and the hashes at report time
	finished := make(chan struct{})
	var reported atomic.Bool
	report := func(timeout bool) {
		if !reported.CompareAndSwap(false, true) {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		rep.Timeout = timeout
		rep.Sent, rep.Recv = sent.n.Load(), recv.n.Load()
		rep.SentSHA256 = hex.EncodeToString(sent.h.Sum(nil))
		rep.RecvSHA256 = hex.EncodeToString(recv.h.Sum(nil))
		rep.ElapsedMS = time.Since(start).Milliseconds()
		emit(rep)
	}
	timer := time.AfterFunc(cfg.timeout, func() {
		// The hashes may be mid-update: the report of a timed-out run
		// is for diagnosis, its counts are what matter.
		select {
		case <-finished:
			return
		default:
		}
		mu.Lock()
		if rep.ReadErr == "" {
			rep.ReadErr = "timeout"
		}
		mu.Unlock()
		report(true)
		os.Exit(3)
	})
	defer timer.Stop()
	setErr := func(p *string, err error) {
		if err == nil {
			return
		}
		mu.Lock()
		if *p == "" {
			*p = err.Error()
		}
		mu.Unlock()
	}

	// The writer: everything, then (close first) the half-close.
	wrote := make(chan struct{})
	eof := make(chan struct{})
	go func() {
		defer close(wrote)
		data := appData(cfg.seed)
		buf := make([]byte, 256<<10)
		for left := cfg.send; left > 0; {
			k := int(min(int64(len(buf)), left))
			data.Read(buf[:k])
			n, err := c.Write(buf[:k])
			mu.Lock()
			sent.h.Write(buf[:n])
			mu.Unlock()
			sent.n.Add(int64(n))
			left -= int64(n)
			if err != nil {
				setErr(&rep.WriteErr, err)
				return
			}
		}
		if cfg.closeMode == "last" {
			<-eof
		}
		setErr(&rep.WriteErr, tc.CloseWrite())
	}()

	// The reader, to the peer's end of stream.
	r := newAppReader(cfg, tc, recv, &mu)
	setErr(&rep.ReadErr, r.run())
	rep.Pauses = r.taken
	close(eof)
	<-wrote
	setErr(&rep.CloseErr, c.Close())
	close(finished)
	report(false)
	mu.Lock()
	failed := rep.ReadErr != "" || rep.WriteErr != "" || rep.CloseErr != ""
	mu.Unlock()
	if failed {
		return 1
	}
	return 0
}

// appConn listens and accepts, or connects.
func appConn(cfg *appConfig, rep *appReport) (net.Conn, error) {
	if cfg.listen != "" {
		rep.Role = "server"
		var lc net.ListenConfig
		lc.SetMultipathTCP(!cfg.plain)
		ln, err := lc.Listen(context.Background(), "tcp", cfg.listen)
		if err != nil {
			return nil, err
		}
		emit(map[string]string{"event": "listening", "addr": ln.Addr().String()})
		defer ln.Close()
		done := make(chan struct{})
		defer close(done)
		go func() {
			select {
			case <-done:
			case <-time.After(cfg.timeout):
				ln.Close()
			}
		}()
		return ln.Accept()
	}
	rep.Role = "client"
	d := net.Dialer{Timeout: cfg.timeout}
	d.SetMultipathTCP(!cfg.plain)
	if cfg.local != "" {
		ip := net.ParseIP(cfg.local)
		if ip == nil {
			a, err := net.ResolveTCPAddr("tcp", cfg.local)
			if err != nil {
				return nil, err
			}
			d.LocalAddr = a
		} else {
			d.LocalAddr = &net.TCPAddr{IP: ip}
		}
	}
	return d.Dial("tcp", cfg.connect)
}

// appReader reads the peer's bytes in one of the styles of -reader,
// pausing at the planned offsets.
type appReader struct {
	cfg   *appConfig
	c     *net.TCPConn
	recv  *counter
	mu    *sync.Mutex
	rng   *rand.ChaCha8 // bulk sizes
	plan  []pause       // pauses still to take, by offset
	taken []pause
	buf   []byte
}

func newAppReader(cfg *appConfig, c *net.TCPConn, recv *counter, mu *sync.Mutex) *appReader {
	r := &appReader{cfg: cfg, c: c, recv: recv, mu: mu, rng: seededRand(cfg.seed, 'b')}
	prng := rand.New(seededRand(cfg.seed, 'p'))
	span := max(cfg.expect, 1)
	for range cfg.pauses {
		d := cfg.pauseMin
		if cfg.pauseMax > cfg.pauseMin {
			d += time.Duration(prng.Int64N(int64(cfg.pauseMax - cfg.pauseMin)))
		}
		r.plan = append(r.plan, pause{At: prng.Int64N(span), MS: d.Milliseconds()})
	}
	sort.Slice(r.plan, func(i, j int) bool { return r.plan[i].At < r.plan[j].At })
	size := 64 << 10
	if cfg.reader == "bulk" {
		size = cfg.bulkMax
	}
	r.buf = make([]byte, size)
	return r
}

// maybePause takes the pauses due at the current offset.
func (r *appReader) maybePause() {
	for len(r.plan) > 0 && r.plan[0].At <= r.recv.n.Load() {
		p := r.plan[0]
		r.plan = r.plan[1:]
		time.Sleep(time.Duration(p.MS) * time.Millisecond)
		r.taken = append(r.taken, pause{At: r.recv.n.Load(), MS: p.MS})
	}
}

// limit is how much the next read may take so as not to run past the
// next pause.
func (r *appReader) limit(want int) int {
	if len(r.plan) > 0 {
		if k := r.plan[0].At - r.recv.n.Load(); k > 0 && k < int64(want) {
			return int(k)
		}
	}
	return want
}

func (r *appReader) account(b []byte) {
	r.mu.Lock()
	r.recv.h.Write(b)
	r.mu.Unlock()
	r.recv.n.Add(int64(len(b)))
}

func (r *appReader) run() error {
	if r.cfg.reader == "poll" {
		return r.runPoll()
	}
	for {
		r.maybePause()
		var n int
		var err error
		if r.cfg.reader == "bulk" {
			want := r.cfg.bulkMin
			if r.cfg.bulkMax > r.cfg.bulkMin {
				want += int(r.rng.Uint64() % uint64(r.cfg.bulkMax-r.cfg.bulkMin+1))
			}
			n, err = io.ReadFull(r.c, r.buf[:r.limit(want)])
			if errors.Is(err, io.ErrUnexpectedEOF) {
				err = io.EOF
			}
		} else {
			n, err = r.c.Read(r.buf[:r.limit(len(r.buf))])
		}
		r.account(r.buf[:n])
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// runPoll is the reader of a classic event loop: poll(2) for POLLIN with a
// timeout, then recv until EAGAIN, on the raw descriptor (non-blocking, as
// Go leaves it).
func (r *appReader) runPoll() error {
	rc, err := r.c.SyscallConn()
	if err != nil {
		return err
	}
	var rerr error
	cerr := rc.Control(func(fd uintptr) {
		for {
			r.maybePause()
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			if _, err := unix.Poll(pfd, 1000); err != nil {
				if errors.Is(err, unix.EINTR) {
					continue
				}
				rerr = err
				return
			}
			if pfd[0].Revents == 0 {
				continue
			}
			// Drain what is readable, up to the next pause.
			for {
				n, err := unix.Read(int(fd), r.buf[:r.limit(len(r.buf))])
				if n > 0 {
					r.account(r.buf[:n])
				}
				if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
					break
				}
				if err != nil {
					rerr = err
					return
				}
				if n == 0 {
					return // end of stream
				}
				if len(r.plan) > 0 && r.plan[0].At <= r.recv.n.Load() {
					break // take the pause, then poll again
				}
			}
		}
	})
	if cerr != nil {
		return cerr
	}
	return rerr
}
