package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/mptund/mptund/pcaps"
)

var pcapCommand = &command{
	name:    "pcap",
	summary: "inspect packet captures",
	usage: `Usage:

	mptund pcap inspect FILE [--json]

Inspect reads a pcap or pcapng capture (Ethernet, raw IP, loopback or Linux
cooked SLL/SLL2), groups its TCP flows into MPTCP connections and checks
them against RFC 8684: MP_CAPABLE keys and IDSNs, MP_JOIN tokens and HMACs,
ADD_ADDR HMACs, DSS checksums and mapping consistency, DATA_FIN and
MP_FASTCLOSE. It prints one block per connection, then the check totals and
every failure with its frame number (as tshark numbers frames).

Exit status: 0 when every check passed, 1 when a check failed, 2 on usage
or read errors.
`,
}

func init() { pcapCommand.run = runPcap }

// runPcap dispatches the pcap subcommands.
func runPcap(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintf(stderr, "%s pcap: missing subcommand\n", programName)
		fmt.Fprint(stderr, pcapCommand.usage)
		return exitUsage
	}
	switch args[0] {
	case "inspect":
		return runPcapInspect(args[1:], stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, pcapCommand.usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "%s pcap: unknown subcommand %q\n", programName, args[0])
	fmt.Fprint(stderr, pcapCommand.usage)
	return exitUsage
}

// runPcapInspect implements "mptund pcap inspect FILE [--json]".
func runPcapInspect(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet(programName+" pcap inspect", pcapCommand.usage, stderr)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return flagStatus(err)
	}
	if len(pos) != 1 {
		return usageError(stderr, fs, "want exactly one capture file, got %d arguments", len(pos))
	}
	pkts, err := pcaps.ReadFile(pos[0])
	switch {
	case errors.Is(err, pcaps.ErrCutShort):
		// Like tshark: analyze what was captured, but say so.
		fmt.Fprintf(stderr, "%s pcap inspect: warning: %v; analyzing the %d TCP packets before it\n", programName, err, len(pkts))
	case err != nil:
		fmt.Fprintf(stderr, "%s pcap inspect: %v\n", programName, err)
		return exitUsage
	}
	r := pcaps.Analyze(pkts)
	if *asJSON {
		err = r.WriteJSON(stdout)
	} else {
		err = r.WriteText(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s pcap inspect: %v\n", programName, err)
		return exitUsage
	}
	if !r.OK() {
		return exitFailed
	}
	return exitOK
}
