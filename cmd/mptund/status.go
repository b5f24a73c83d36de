package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

var statusCommand = &command{
	name:    "status",
	summary: "print a running client's or proxy's live state",
	usage: `Usage:

	mptund status [--json] SOCKET

Status reads the live state of "mptund client" or "mptund proxy" from the
unix socket given to it with --status: its paths (with rates and
counters), every connection it relays with the bytes each subflow
carried, and totals. --json prints the raw JSON.
`,
}

func init() {
	statusCommand.run = func(args []string, stdout, stderr io.Writer) int {
		fs := newFlagSet(programName+" status", statusCommand.usage, stderr)
		asJSON := fs.Bool("json", false, "print the JSON as served")
		pos, err := parseInterspersed(fs, args)
		if err != nil {
			return flagStatus(err)
		}
		if len(pos) != 1 {
			return usageError(stderr, fs, "want exactly one SOCKET")
		}
		st, err := readStatus(pos[0])
		if err != nil {
			fmt.Fprintf(stderr, "%s status: %v\n", programName, err)
			return exitFailed
		}
		if *asJSON {
			e := json.NewEncoder(stdout)
			e.SetIndent("", "  ")
			e.Encode(st)
			return exitOK
		}
		printStatus(stdout, st)
		return exitOK
	}
}

// printStatus writes the status for people.
func printStatus(w io.Writer, st *Status) {
	fmt.Fprintf(w, "%s (pid %d), up %.0f s, mode %s %s\n", st.Role, st.PID, st.Uptime, st.Mode, st.Target)
	fmt.Fprintf(w, "connections: %d open, %d relayed, %d failed to open, %d reset\n", st.Totals.Active, st.Totals.Flows, st.Totals.Failed, st.Totals.Resets)
	fmt.Fprintln(w, "paths:")
	for _, p := range st.Paths {
		var extra []string
		if p.Uplink != "" {
			extra = append(extra, "over "+p.Uplink)
		}
		if p.Rate > 0 {
			extra = append(extra, "rate "+formatRate(p.Rate))
		}
		if p.SubflowRate > 0 {
			extra = append(extra, "subflow rate "+formatRate(p.SubflowRate))
		}
		if p.DelayMS > 0 {
			extra = append(extra, fmt.Sprintf("delay %.0f ms", p.DelayMS))
		}
		fmt.Fprintf(w, "  %-10s %v %s\n", p.Name, p.Addrs, strings.Join(extra, ", "))
	}
	for _, f := range st.Flows {
		kind := "MPTCP"
		if !f.MPTCP {
			kind = "TCP"
			if f.Fallback != "" {
				kind += " (fallback: " + f.Fallback + ")"
			}
		}
		fmt.Fprintf(w, "%v -> %v  %.0f s  %d B out, %d B in  %s\n", f.Src, f.Dst, f.Age, f.BytesOut, f.BytesIn, kind)
		for _, s := range f.Subflows {
			state := "up"
			switch {
			case s.Closed:
				state = "closed"
			case !s.Established:
				state = "opening"
			}
			fmt.Fprintf(w, "    %-8s %v -> %v  %s  sent %d  received %d  srtt %.1f ms\n", s.Path, s.Local, s.Remote, state, s.BytesSent, s.BytesReceived, s.SRTTms)
		}
	}
}
