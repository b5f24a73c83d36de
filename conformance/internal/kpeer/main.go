// Command kpeer is a minimal Linux kernel MPTCP peer for the conformance
// tests: a client or server that opens an MPTCP socket with Go's net package
// (SetMultipathTCP), moves a given number of random bytes each way and
// reports, as JSON lines on stdout, what it sent and received (byte counts
// and SHA-256), so that a test can verify the data end to end.
//
// Usage:
//
//	kpeer server -listen ADDR:PORT [-send N] [-expect N] [-linger0]
//	kpeer client -connect ADDR:PORT [-send N] [-pause] [-hold D] [-linger0] [-unread]
//	kpeer app (-listen ADDR:PORT | -connect ADDR:PORT) [...]   (see app.go)
//
// Every line is a JSON object with an "event" field:
//
//	{"event":"listening","addr":...}         server: the socket listens
//	{"event":"connected","local":...,...}    a connection is established
//	{"event":"paused"}                       client -pause: waiting for a line on stdin
//	{"event":"done","sent":N,...}            final report
//
// The client sends the first half of its bytes, then (with -pause) waits
// for a line on stdin and (with -hold) sleeps, so that the test can make
// the kernel's path manager act while the connection is open; then it sends
// the rest. By default it half-closes and reads until EOF. With -linger0 it
// instead closes at once with SO_LINGER 0; with -unread it first waits for
// the peer's data to arrive and closes without reading it. Both make the
// Linux kernel abort the connection with MP_FASTCLOSE (RFC 8684 §3.5).
//
// The server accepts one connection and reads until EOF while sending its
// own bytes, then closes. With -expect it first reads that many bytes and
// only then sends, so that the client seeing the server's data proves the
// server has read everything.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"hash"
	"io"
	"net"
	"os"
	"time"
)

// report is the final JSON line.
type report struct {
	Event      string `json:"event"`
	Role       string `json:"role"`
	Local      string `json:"local,omitempty"`
	Remote     string `json:"remote,omitempty"`
	Multipath  bool   `json:"multipath"`
	Sent       int64  `json:"sent"`
	SentSHA256 string `json:"sent_sha256"`
	Recv       int64  `json:"recv"`
	RecvSHA256 string `json:"recv_sha256"`
	ReadErr    string `json:"read_err,omitempty"`
	WriteErr   string `json:"write_err,omitempty"`
}

var out = json.NewEncoder(os.Stdout)

func emit(v any) {
	if err := out.Encode(v); err != nil {
		fmt.Fprintln(os.Stderr, "kpeer:", err)
		os.Exit(2)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "kpeer: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 2 {
		fail("usage: kpeer server|client|app [flags]")
	}
	switch os.Args[1] {
	case "server":
		server(os.Args[2:])
	case "client":
		client(os.Args[2:])
	case "app":
		app(os.Args[2:])
	default:
		fail("unknown mode %q", os.Args[1])
	}
}

// payload returns n random bytes.
func payload(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		fail("random: %v", err)
	}
	return b
}

func sum(h hash.Hash) string { return hex.EncodeToString(h.Sum(nil)) }

func isMultipath(c net.Conn) bool {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return false
	}
	mp, err := tc.MultipathTCP()
	return err == nil && mp
}

func server(args []string) {
	fs := flag.NewFlagSet("kpeer server", flag.ExitOnError)
	listen := fs.String("listen", "", "address to listen on (ADDR:PORT)")
	send := fs.Int("send", 0, "bytes to send to the client")
	expect := fs.Int64("expect", 0, "read this many bytes before sending (0: send while reading)")
	linger0 := fs.Bool("linger0", false, "close with SO_LINGER 0 after the transfer")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	_ = fs.Parse(args)
	if *listen == "" {
		fail("server: -listen is required")
	}
	var lc net.ListenConfig
	lc.SetMultipathTCP(true)
	ln, err := lc.Listen(context.Background(), "tcp", *listen)
	if err != nil {
		fail("listen: %v", err)
	}
	emit(map[string]string{"event": "listening", "addr": ln.Addr().String()})
	time.AfterFunc(*timeout, func() { fail("server: timeout after %v", *timeout) })
	c, err := ln.Accept()
	if err != nil {
		fail("accept: %v", err)
	}
	// Keep listening: Linux hands MP_JOIN SYNs to the listening socket
	// of the address they are sent to (RFC 8684 §3.2), so closing it
	// would refuse joins to the initial address.
	defer ln.Close()
	rep := report{Event: "done", Role: "server", Local: c.LocalAddr().String(),
		Remote: c.RemoteAddr().String(), Multipath: isMultipath(c)}
	emit(map[string]any{"event": "connected", "local": rep.Local, "remote": rep.Remote, "multipath": rep.Multipath})

	data := payload(*send)
	sh := sha256.Sum256(data)
	rep.SentSHA256 = hex.EncodeToString(sh[:])
	rh := sha256.New()
	doSend := func() {
		n, err := c.Write(data)
		rep.Sent = int64(n)
		if err != nil {
			rep.WriteErr = err.Error()
		}
	}
	if *expect > 0 {
		// Read the client's bytes first, then answer, then read on
		// until EOF (or the reset of an aborted connection).
		n, err := io.CopyN(rh, c, *expect)
		rep.Recv = n
		if err == nil {
			doSend()
			n, err = io.Copy(rh, c)
			rep.Recv += n
		}
		if err != nil {
			rep.ReadErr = err.Error()
		}
	} else {
		done := make(chan struct{})
		go func() { doSend(); close(done) }()
		n, err := io.Copy(rh, c)
		rep.Recv = n
		if err != nil {
			rep.ReadErr = err.Error()
		}
		<-done
	}
	rep.RecvSHA256 = sum(rh)
	if *linger0 {
		_ = c.(*net.TCPConn).SetLinger(0)
	}
	c.Close()
	emit(rep)
}

func client(args []string) {
	fs := flag.NewFlagSet("kpeer client", flag.ExitOnError)
	connect := fs.String("connect", "", "address to connect to (ADDR:PORT)")
	local := fs.String("local", "", "local address to bind (ADDR or ADDR:PORT)")
	send := fs.Int("send", 0, "bytes to send to the server")
	pause := fs.Bool("pause", false, "after the first half of the data, wait for a line on stdin")
	hold := fs.Duration("hold", 0, "after the first half of the data (and -pause), keep the connection open this long")
	linger0 := fs.Bool("linger0", false, "close at once with SO_LINGER 0 instead of a graceful shutdown")
	unread := fs.Int64("unread", 0, "wait until this many bytes are readable, then close without reading them")
	timeout := fs.Duration("timeout", 30*time.Second, "give up after this long")
	_ = fs.Parse(args)
	if *connect == "" {
		fail("client: -connect is required")
	}
	time.AfterFunc(*timeout, func() { fail("client: timeout after %v", *timeout) })
	var d net.Dialer
	d.SetMultipathTCP(true)
	if *local != "" {
		ap, err := net.ResolveTCPAddr("tcp", *local)
		if err != nil {
			if ip := net.ParseIP(*local); ip != nil {
				ap = &net.TCPAddr{IP: ip}
			} else {
				fail("-local: %v", err)
			}
		}
		d.LocalAddr = ap
	}
	c, err := d.Dial("tcp", *connect)
	if err != nil {
		fail("dial: %v", err)
	}
	tc := c.(*net.TCPConn)
	rep := report{Event: "done", Role: "client", Local: c.LocalAddr().String(),
		Remote: c.RemoteAddr().String(), Multipath: isMultipath(c)}
	emit(map[string]any{"event": "connected", "local": rep.Local, "remote": rep.Remote, "multipath": rep.Multipath})

	data := payload(*send)
	sh := sha256.Sum256(data)
	rep.SentSHA256 = hex.EncodeToString(sh[:])
	half := len(data) / 2
	writeErr := func(err error) {
		if err != nil && rep.WriteErr == "" {
			rep.WriteErr = err.Error()
		}
	}
	n, err := c.Write(data[:half])
	rep.Sent += int64(n)
	writeErr(err)
	if *pause {
		emit(map[string]string{"event": "paused"})
		if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil && !errors.Is(err, io.EOF) {
			fail("reading stdin: %v", err)
		}
	}
	if *hold > 0 {
		time.Sleep(*hold)
	}
	n, err = c.Write(data[half:])
	rep.Sent += int64(n)
	writeErr(err)

	rh := sha256.New()
	switch {
	case *unread > 0:
		// Wait until the peer's bytes are queued, without reading
		// them: closing with unread data aborts the connection.
		if err := waitReadable(tc, int(*unread)); err != nil {
			rep.ReadErr = err.Error()
		}
		c.Close()
	case *linger0:
		if err := tc.SetLinger(0); err != nil {
			fail("SO_LINGER: %v", err)
		}
		c.Close()
	default:
		if err := tc.CloseWrite(); err != nil {
			writeErr(err)
		}
		rep.Recv, err = io.Copy(rh, c)
		if err != nil {
			rep.ReadErr = err.Error()
		}
		c.Close()
	}
	rep.RecvSHA256 = sum(rh)
	emit(rep)
}
