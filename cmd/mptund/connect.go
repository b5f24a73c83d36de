package main

import (
	"context"
	"io"
	"os"
	"time"

	"github.com/mptund/mptund/stack"
)

var connectCommand = &command{
	name:    "connect",
	summary: "open a connection through the engine, netcat style",
	usage: `Usage:

	mptund connect [flags] ADDR:PORT

Connect creates a TUN device, starts the engine on it and connects to
ADDR:PORT (an IP literal; IPv6 in brackets) through the engine's own TCP.

` + sharedFlagsHelp + `
--timeout bounds the connection attempt (default: the engine's SYN
retries, about two minutes).

Exit status: 0 when both directions ended cleanly, 1 when the run failed
(connection refused, timed out or reset, TUN setup, interrupted), 2 on
usage errors.
`,
}

func init() {
	connectCommand.run = func(args []string, stdout, stderr io.Writer) int {
		return withSignals(func(ctx context.Context) int {
			return runConnect(ctx, args, os.Stdin, stdout, stderr)
		})
	}
}

// runConnect implements "mptund connect". ctx ends the run early (the
// signals).
func runConnect(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet(programName+" connect", connectCommand.usage, stderr)
	var f netcatFlags
	f.register(fs)
	timeout := fs.Duration("timeout", 0, "give up connecting after this `duration` (0: no limit but the SYN retries)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return flagStatus(err)
	}
	if len(pos) != 1 {
		return usageError(stderr, fs, "want exactly one ADDR:PORT, got %d arguments", len(pos))
	}
	raddr, err := stack.ResolveTCPAddr("tcp", pos[0])
	if err != nil {
		return usageError(stderr, fs, "%s: %v", pos[0], err)
	}
	if raddr.IP == nil || raddr.IP.IsUnspecified() || raddr.Port == 0 {
		return usageError(stderr, fs, "%s: want an IP address and a port", pos[0])
	}
	if *timeout < 0 {
		return usageError(stderr, fs, "--timeout %v is negative", *timeout)
	}
	if err := f.validate(); err != nil {
		return usageError(stderr, fs, "%v", err)
	}
	return runNetcat(ctx, "connect", &f, raddr.String(), stdin, stdout, stderr,
		func(ctx context.Context, l *link, s *session) error {
			dctx := ctx
			if *timeout > 0 {
				var cancel context.CancelFunc
				dctx, cancel = context.WithTimeout(ctx, *timeout)
				defer cancel()
			}
			start := time.Now()
			c, err := l.eng.DialTCP(dctx, "tcp", nil, raddr)
			if err != nil {
				return interruptedErr(ctx, err)
			}
			s.logf("connected %v -> %v in %v", c.LocalAddr(), c.RemoteAddr(), time.Since(start).Round(time.Microsecond))
			return s.serve(ctx, c)
		})
}
