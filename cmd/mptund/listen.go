package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/mptund/mptund/stack"
)

var listenCommand = &command{
	name:    "listen",
	summary: "accept a connection through the engine, netcat style",
	usage: `Usage:

	mptund listen [flags] [ADDR:]PORT

Listen creates a TUN device, starts the engine on it and accepts one
connection on PORT (on every engine address, or on ADDR only) with the
engine's own TCP, like nc -l. With --keep it accepts connections one
after another until interrupted; stdin goes to the first connection(s)
until its end, later ones get a FIN at once.

` + sharedFlagsHelp + `
Exit status: 0 when the connection ended cleanly (with --keep: when
interrupted between connections, none having failed), 1 when the run
failed (connection reset, TUN setup, interrupted during a connection), 2
on usage errors.
`,
}

func init() {
	listenCommand.run = func(args []string, stdout, stderr io.Writer) int {
		return withSignals(func(ctx context.Context) int {
			return runListen(ctx, args, os.Stdin, stdout, stderr)
		})
	}
}

// parseListenAddr parses "[ADDR:]PORT"; a bare port listens on every
// address.
func parseListenAddr(s string) (*net.TCPAddr, error) {
	if _, err := strconv.ParseUint(s, 10, 16); err == nil || !strings.Contains(s, ":") {
		s = ":" + s
	}
	a, err := stack.ResolveTCPAddr("tcp", s)
	if err != nil {
		return nil, err
	}
	if a.Port == 0 {
		return nil, errors.New("want a port number other than 0")
	}
	return a, nil
}

// runListen implements "mptund listen". ctx ends the run early (the
// signals).
func runListen(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet(programName+" listen", listenCommand.usage, stderr)
	var f netcatFlags
	f.register(fs)
	keep := fs.Bool("keep", false, "accept connections one after another until interrupted")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return flagStatus(err)
	}
	if len(pos) != 1 {
		return usageError(stderr, fs, "want exactly one [ADDR:]PORT, got %d arguments", len(pos))
	}
	laddr, err := parseListenAddr(pos[0])
	if err != nil {
		return usageError(stderr, fs, "%s: %v", pos[0], err)
	}
	if err := f.validate(); err != nil {
		return usageError(stderr, fs, "%v", err)
	}
	return runNetcat(ctx, "listen", &f, laddr.String(), stdin, stdout, stderr,
		func(ctx context.Context, l *link, s *session) error {
			ln, err := l.eng.ListenTCP("tcp", laddr)
			if err != nil {
				return err
			}
			defer ln.Close()
			stop := context.AfterFunc(ctx, func() { ln.Close() })
			defer stop()
			s.logf("listening on %v (engine %v on %s)", ln.Addr(), &f.addrs, f.tun)
			var accepted, failed int // with --keep
			for {
				c, err := ln.AcceptTCP()
				if err != nil {
					if ctx.Err() == nil {
						return err
					}
					if *keep { // the way --keep ends
						if failed > 0 {
							return fmt.Errorf("%d of %d connections failed", failed, accepted)
						}
						return nil
					}
					return errInterrupted
				}
				accepted++
				s.logf("connection from %v", c.RemoteAddr())
				err = s.serve(ctx, c)
				if !*keep || errors.Is(err, errInterrupted) {
					return err
				}
				if err != nil {
					failed++
					fmt.Fprintf(stderr, "%s listen: connection from %v: %v\n", programName, c.RemoteAddr(), err)
				}
			}
		})
}
