// Command mptund is the mptund tool: a userspace Multipath TCP (RFC 8684)
// engine and its companions.
//
// Usage:
//
//	mptund <command> [arguments]
//	mptund help [command]
//
// Commands:
//
//	demo [flags]                 run the built-in two-path demonstration in network namespaces
//	client [flags]               carry unmodified applications' TCP over Multipath TCP
//	proxy [flags]                accept Multipath TCP and forward it over TCP (RFC 8803 converter)
//	status SOCKET                print a running client's or proxy's live state
//	connect [flags] ADDR:PORT    connect through the engine on a new TUN, netcat style
//	listen [flags] [ADDR:]PORT   accept a connection through the engine, netcat style
//	pcap inspect FILE [--json]   check the MPTCP conversations in a capture
//
// Exit status: 0 on success, 1 when a command ran but found failures (for
// example failed capture checks), 2 on usage errors and I/O errors.
//
// With MPTUND_CPUPROFILE=PATH in the environment, any command writes a Go
// CPU profile of its whole run to PATH.PID (for go tool pprof).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
)

// Exit statuses.
const (
	exitOK      = 0
	exitFailed  = 1 // the command ran and found problems
	exitUsage   = 2 // bad usage, unreadable input
	programName = "mptund"
)

// command is one subcommand. run receives the arguments after the command
// name and returns the exit status.
type command struct {
	name    string
	summary string
	usage   string // argument synopsis and description, printed by help
	run     func(args []string, stdout, stderr io.Writer) int
}

// commands lists the subcommands in help order.
var commands = []*command{
	demoCommand,
	clientCommand,
	proxyCommand,
	statusCommand,
	connectCommand,
	listenCommand,
	pcapCommand,
}

func main() {
	stop := cpuProfile(os.Getenv("MPTUND_CPUPROFILE"), os.Stderr)
	code := run(os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// cpuProfile starts a CPU profile to path.PID when path is set, and
// returns the function that ends it.
func cpuProfile(path string, stderr io.Writer) (stop func()) {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(fmt.Sprintf("%s.%d", path, os.Getpid()))
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: MPTUND_CPUPROFILE: %v\n", programName, err)
		if f != nil {
			f.Close()
		}
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// run dispatches args (without the program name) and returns the exit
// status.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch name := args[0]; name {
	case "help", "-h", "-help", "--help":
		if len(args) > 1 && name == "help" {
			c := lookup(args[1])
			if c == nil {
				fmt.Fprintf(stderr, "%s help: unknown command %q\n", programName, args[1])
				return exitUsage
			}
			fmt.Fprint(stdout, c.usage)
			return exitOK
		}
		usage(stdout)
		return exitOK
	default:
		c := lookup(name)
		if c == nil {
			fmt.Fprintf(stderr, "%s: unknown command %q\n", programName, name)
			usage(stderr)
			return exitUsage
		}
		return c.run(args[1:], stdout, stderr)
	}
}

func lookup(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "%s is a userspace Multipath TCP engine.\n\nUsage:\n\n\t%s <command> [arguments]\n\nCommands:\n\n", programName, programName)
	for _, c := range commands {
		fmt.Fprintf(w, "\t%-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\nRun '%s help <command>' or '%s <command> -h' for details.\n", programName, programName)
}

// newFlagSet returns a FlagSet that reports errors instead of exiting and
// prints usage text to stderr.
func newFlagSet(name, usageText string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usageText)
		if hasFlags(fs) {
			fmt.Fprintln(stderr, "\nFlags:")
			fs.PrintDefaults()
		}
	}
	return fs
}

func hasFlags(fs *flag.FlagSet) bool {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	return n > 0
}

// parseInterspersed parses flags that may appear before, between or after
// the positional arguments (the flag package alone stops at the first
// positional one), and returns the positional arguments. "--" ends flag
// parsing.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// fs.Parse consumed a "--" if the arguments before rest end with it.
		if consumed := args[:len(args)-len(rest)]; len(consumed) > 0 && consumed[len(consumed)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// usageError reports a usage error for a subcommand and returns exitUsage.
func usageError(stderr io.Writer, fs *flag.FlagSet, format string, args ...any) int {
	fmt.Fprintf(stderr, "%s: %s\n", fs.Name(), fmt.Sprintf(format, args...))
	fs.Usage()
	return exitUsage
}

// flagStatus converts a flag parsing error to an exit status: -h is not an
// error.
func flagStatus(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	return exitUsage
}
