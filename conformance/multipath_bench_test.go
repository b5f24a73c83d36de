package conformance

// Multipath benchmarks: aggregation on two rate-shaped paths (the cases
// of the kernel's selftest simult_flows.sh), failover when the primary
// path dies mid-transfer, and throughput and CPU on two unshaped paths.
// Each prints one table whose figures and ratios come from the same run,
// with a note of how the paths were shaped and delayed, the background
// load, the command, and whether the namespaces are gone. They are
// measurements: only a transfer that loses or corrupts data fails. Run
// them as root, one at a time:
//
//	go test ./conformance/ -run '^$' -bench '^BenchmarkMultipathAggregation$' -benchtime 1x
//	go test ./conformance/ -run '^$' -bench '^BenchmarkMultipathFailover$' -benchtime 1x
//	go test ./conformance/ -run '^$' -bench '^BenchmarkMultipathUnshaped$' -benchtime 1x
//
// The topologies are described in multipath_benchrig_test.go.

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/mptund/mptund/internal/netns"
)

var (
	mpbSize = flag.Int64("conformance.mpbench.size", 16<<20,
		"bytes each way of BenchmarkMultipathAggregation and BenchmarkMultipathFailover")
	mpbCases = flag.String("conformance.mpbench.cases", "",
		"comma-separated substrings: run only the cases of BenchmarkMultipathAggregation and modes of BenchmarkMultipathFailover whose name contains one")
	mpbSetups = flag.String("conformance.mpbench.setups", "",
		"comma-separated substrings: run only the setups (client-server: engine-engine, engine-kernel, kernel-engine, kernel-kernel) whose name contains one")
	mpbBulk = flag.Int64("conformance.mpbench.bulk", 1<<30,
		"bytes per transfer of BenchmarkMultipathUnshaped")
	mpbCC = flag.String("conformance.mpbench.cc", "cubic",
		"congestion control of every sender: the engine's (tcp.Config.Congestion) and the kernel's sockets (TCP_CONGESTION); CLIENT/SERVER gives the client's and the server's (in BenchmarkMultipathUnshaped, CLIENT for all)")
	mpbRounds = flag.Int("conformance.mpbench.rounds", 1,
		"rounds of the multipath benchmarks (each round measures every row once; BenchmarkMultipathUnshaped prints totals)")
)

// mpbCCs returns the client's and the server's congestion control
// (-conformance.mpbench.cc).
func mpbCCs() (client, server string) {
	client, server, ok := strings.Cut(*mpbCC, "/")
	if !ok {
		server = client
	}
	return client, server
}

// benchOnce runs f the first time it is called for a sub-benchmark: a
// sub-benchmark's function runs again when -benchtime asks for more than
// one iteration, and each of these measures once (rounds are flags).
func benchOnce(f func(b *testing.B)) func(b *testing.B) {
	ran := false
	return func(b *testing.B) {
		if ran {
			return
		}
		ran = true
		f(b)
	}
}

// mpbSelected reports whether name contains one of the comma-separated
// substrings of filter (all when it is empty).
func mpbSelected(filter, name string) bool {
	if filter == "" {
		return true
	}
	for _, f := range strings.Split(filter, ",") {
		if f != "" && strings.Contains(name, f) {
			return true
		}
	}
	return false
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

func msec(d time.Duration) string { return fmt.Sprintf("%.0f", float64(d)/1e6) }

// --- (a) Aggregation ------------------------------------------------------------

// aggCase is one simult_flows case: the two client paths.
type aggCase struct {
	name  string
	paths [2]sfPath
}

func (c aggCase) sumMbit() int { return c.paths[0].Mbit + c.paths[1].Mbit }

// aggCases are simult_flows.sh's run_test cases with the rates of the
// issue (10+10 and 10+3 Mbit/s; the selftest has 15+5 for the
// unbalanced ones) and 1 ms where the selftest has no delay.
func aggCases() []aggCase {
	ms := time.Millisecond
	p := func(mbit int, d time.Duration) sfPath { return sfPath{Mbit: mbit, Delay: d} }
	return []aggCase{
		{"10+10Mbit 1+1ms", [2]sfPath{p(10, ms), p(10, ms)}},     // balanced bwidth
		{"10+10Mbit 1+25ms", [2]sfPath{p(10, ms), p(10, 25*ms)}}, // balanced bwidth with unbalanced delay
		{"10+3Mbit 1+1ms", [2]sfPath{p(10, ms), p(3, ms)}},       // unbalanced bwidth
		{"10+3Mbit 1+25ms", [2]sfPath{p(10, ms), p(3, 25*ms)}},   // unbalanced bwidth with unbalanced delay
		{"10+3Mbit 25+1ms", [2]sfPath{p(10, 25*ms), p(3, ms)}},   // ... with opposed, unbalanced delay
	}
}

// simultFlowsLimit is the time simult_flows.sh allows a transfer of n
// bytes over the case's paths: n at 90% of the summed rates ("10% header
// overhead") plus 400 ms for mptcp_connect's join sleeps and 50 ms slack.
func simultFlowsLimit(n int64, sumMbit int) time.Duration {
	ms := 1000 * n * 8 * 10 / (int64(sumMbit) * 1000 * 1000 * 9)
	return time.Duration(ms+400+50) * time.Millisecond
}

// aggRow is one case in one setup.
type aggRow struct {
	round int
	cs    aggCase
	setup sfSetup
	res   sfXferResult
	wire  sfWire // over the whole transfer
	// wireAt is what the bottlenecks carried until the last byte of
	// client-to-server ([0]) and of server-to-client ([1]) data.
	wireAt             [2]sfWire
	subs               [2]sfSubBytes
	retransC, retransS uint64
	kernelCC           string
}

// frac is a direction's goodput as a fraction of the summed rates.
func (r aggRow) frac(d sfDir) float64 { return d.mbit() / float64(r.cs.sumMbit()) }

// linkUse is what the bottlenecks of one direction carried (every byte:
// headers, this direction's data and its retransmissions, the other
// direction's ACKs) over their capacity during the direction's transfer.
func (r aggRow) linkUse(c2s bool) float64 {
	d, w := r.res.s2c, r.wireAt[1].s2c
	if c2s {
		d, w = r.res.c2s, r.wireAt[0].c2s
	}
	bytes := w[0].bytes + w[1].bytes
	return float64(bytes) * 8 / (float64(r.cs.sumMbit()) * 1e6 * d.elapsed.Seconds())
}

// payloadShare is the data's share of the bytes the bottlenecks of one
// direction carried: what headers, ACKs and retransmissions leave.
func (r aggRow) payloadShare(c2s bool) float64 {
	d, w := r.res.s2c, r.wireAt[1].s2c
	if c2s {
		d, w = r.res.c2s, r.wireAt[0].c2s
	}
	return float64(d.received) / float64(w[0].bytes+w[1].bytes)
}

// BenchmarkMultipathAggregation measures the aggregation of two
// rate-shaped paths, the cases of the kernel's simult_flows.sh: 10+10 and
// 10+3 Mbit/s, both paths 1 ms or one 1 ms and the other 25 ms (one-way,
// each direction), 16 MiB each way at once, for each setup
// (client-server): two engines, the engine with the kernel in both roles,
// and two kernels, all on the same router topology
// (multipath_benchrig_test.go). Reported per row: the time until both
// directions are in, each direction's goodput and its fraction of the
// summed link rates (simult_flows demands about 90%: its limit is the
// transfer at 90% plus 450 ms; the goal here is 97%), how busy the
// bottlenecks were, and what each subflow carried as the client counts
// it. Ratios are against kernel-kernel in the same case.
//
//	go test ./conformance/ -run '^$' -bench '^BenchmarkMultipathAggregation$' -benchtime 1x
//
// -conformance.mpbench.size, -conformance.mpbench.cases and
// -conformance.mpbench.setups change the volume and select rows.
func BenchmarkMultipathAggregation(b *testing.B) {
	netns.RequireMPTCP(b)
	netns.RequireTools(b, "tc", "ss", "nstat", "nft")
	load := backgroundLoad()
	n := *mpbSize
	ccClient, ccServer := mpbCCs()
	var rows []aggRow
	for round := range *mpbRounds {
		for _, cs := range aggCases() {
			if !mpbSelected(*mpbCases, cs.name) {
				continue
			}
			for _, setup := range sfSetups {
				if !mpbSelected(*mpbSetups, setup.String()) {
					continue
				}
				name := strings.ReplaceAll(cs.name, " ", "_") + "_" + setup.String() + roundSuffix(round)
				b.Run(name, benchOnce(func(b *testing.B) {
					g := newSFRig(b, setup, cs.paths, ccClient, ccServer)
					cl, sv := g.open(b)
					w0 := g.wire(b)
					c0, s0 := g.retrans(b)
					timeout := time.Minute + 4*time.Duration(float64(n)*8/float64(cs.sumMbit()*1e6)*float64(time.Second))
					var wireAt [2]sfWire
					var wireErr error
					res := sfTransfer(cl, sv, sfXfer{n: n, timeout: timeout, done: func(c2s bool) {
						i := 1
						if c2s {
							i = 0
						}
						w, err := g.readWire()
						if err != nil {
							wireErr = err
						}
						wireAt[i] = w.sub(w0)
					}})
					if wireErr != nil {
						b.Fatal(wireErr)
					}
					row := aggRow{wireAt: wireAt, round: round, cs: cs, setup: setup, res: res, wire: g.wire(b).sub(w0), subs: g.clientSubflows(b, cl), kernelCC: g.kernelCC(b)}
					c1, s1 := g.retrans(b)
					row.retransC, row.retransS = c1-c0, s1-s0
					g.checkDelayLines(b)
					for _, d := range []struct {
						name string
						d    sfDir
					}{{"client->server", res.c2s}, {"server->client", res.s2c}} {
						if d.d.err != nil {
							b.Errorf("%s: %v", d.name, d.d.err)
						}
					}
					rows = append(rows, row)
					b.ReportMetric(res.elapsed.Seconds(), "s")
					b.ReportMetric(100*row.frac(res.c2s), "c2s-%sum")
					b.ReportMetric(100*row.frac(res.s2c), "s2c-%sum")
					b.ReportMetric(0, "ns/op")
				}))
			}
		}
	}

	ref := func(r aggRow) (aggRow, bool) {
		for _, k := range rows {
			if k.round == r.round && k.cs.name == r.cs.name && !k.setup.engineClient && !k.setup.engineServer {
				return k, true
			}
		}
		return aggRow{}, false
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "\nround\tcase\tclient-server\ttime s\tc→s Mbit/s\ts→c Mbit/s\tc→s %%sum\ts→c %%sum\tlink use c→s/s→c %%\tpayload/wire c→s/s→c %%\tc→s MiB p1+p2\ts→c MiB p1+p2\ttbf drops p1/p2\tdata retx c/s\tgoodput vs k-k c→s/s→c\tsimult_flows limit\t\n")
	for _, r := range rows {
		k, hasK := ref(r)
		vsK := "-"
		if hasK {
			vsK = fmt.Sprintf("%.2f/%.2f", r.res.c2s.mbit()/k.res.c2s.mbit(), r.res.s2c.mbit()/k.res.s2c.mbit())
		}
		limit := simultFlowsLimit(n, r.cs.sumMbit())
		verdict := "ok"
		if r.res.elapsed > limit {
			verdict = "over"
		}
		if r.res.c2s.err != nil || r.res.s2c.err != nil {
			verdict = "DATA LOST"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%.2f\t%.2f\t%.2f\t%.1f\t%.1f\t%.1f/%.1f\t%.1f/%.1f\t%.1f+%.1f\t%.1f+%.1f\t%d/%d\t%d/%d\t%s\t%.2fs %s\t\n",
			r.round+1, r.cs.name, r.setup, r.res.elapsed.Seconds(), r.res.c2s.mbit(), r.res.s2c.mbit(),
			100*r.frac(r.res.c2s), 100*r.frac(r.res.s2c), 100*r.linkUse(true), 100*r.linkUse(false),
			100*r.payloadShare(true), 100*r.payloadShare(false),
			mib(r.subs[0].acked), mib(r.subs[1].acked), mib(r.subs[0].received), mib(r.subs[1].received),
			r.wire.c2s[0].drops+r.wire.s2c[0].drops, r.wire.c2s[1].drops+r.wire.s2c[1].drops,
			r.retransC, r.retransS, vsK, limit.Seconds(), verdict)
	}
	tw.Flush()
	if *mpbRounds > 1 {
		aggSummary(rows)
	}
	var kcc []string
	for _, r := range rows {
		if r.kernelCC != "-" && !slices.Contains(kcc, r.kernelCC) {
			kcc = append(kcc, r.kernelCC)
		}
	}
	fmt.Printf(`%d MiB each way at once (SHA-256 checked), timed from the first write (both subflows already up) until both directions' last
byte is read (no DATA_FIN: the subflows stay up to be counted). Congestion control of the senders (client/server): %s (kernel subflows, as ss shows them: %s).
Paths (simult_flows.sh topology): client --path 1/path 2--> router namespace --> server; each client path is a TUN in the router whose
userspace end is this process: the engine's NIC, or a relay to a kernel client's TUN. Rate: tbf in the router on both directions of each
client path ("rate N mbit burst 16kb latency 100ms"; client->server on an ifb fed by the TUN's ingress), counting IP bytes. Delay: internal/impair
on the router's TUN of each client path, the given one-way delay in each direction (this kernel has no sch_netem); server link unshaped.
%%sum: goodput over the summed link rates; link use: bytes the bottlenecks of that direction sent until its last byte (data, headers,
retransmissions and the other direction's ACKs) over their capacity; payload/wire: the goodput's share of those bytes, so %%sum = link use x
payload/wire.
MiB p1+p2: per subflow as the client counts it (c->s acked, s->c received in order); tbf drops: both directions of the path;
data retx: data-level retransmissions (MPTCPRetrans) of client and server. simult_flows limit: its max time for this size and rates.
Background load: %s.
Command: %s
`, n>>20, ccClient+"/"+ccServer, strings.Join(kcc, " "), load, benchCommand())
	printNamespacesLeft()
}

// aggSummary prints each case and setup's mean and range over the
// rounds.
func aggSummary(rows []aggRow) {
	type key struct {
		cs    string
		setup sfSetup
	}
	var order []key
	by := map[key][]aggRow{}
	for _, r := range rows {
		k := key{r.cs.name, r.setup}
		if by[k] == nil {
			order = append(order, k)
		}
		by[k] = append(by[k], r)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "\nover the rounds\tclient-server\trounds\tc→s %%sum mean (min-max)\ts→c %%sum mean (min-max)\tlink use c→s/s→c mean %%\ttime s mean\t\n")
	for _, k := range order {
		rs := by[k]
		stat := func(f func(aggRow) float64) (mean, lo, hi float64) {
			lo, hi = f(rs[0]), f(rs[0])
			for _, r := range rs {
				v := f(r)
				mean += v / float64(len(rs))
				lo, hi = min(lo, v), max(hi, v)
			}
			return
		}
		cm, cl, ch := stat(func(r aggRow) float64 { return 100 * r.frac(r.res.c2s) })
		sm, sl, sh := stat(func(r aggRow) float64 { return 100 * r.frac(r.res.s2c) })
		lc, _, _ := stat(func(r aggRow) float64 { return 100 * r.linkUse(true) })
		ls, _, _ := stat(func(r aggRow) float64 { return 100 * r.linkUse(false) })
		tm, _, _ := stat(func(r aggRow) float64 { return r.res.elapsed.Seconds() })
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.1f (%.1f-%.1f)\t%.1f (%.1f-%.1f)\t%.1f/%.1f\t%.2f\t\n", k.cs, k.setup, len(rs), cm, cl, ch, sm, sl, sh, lc, ls, tm)
	}
	tw.Flush()
}

// roundSuffix names a sub-benchmark's round when there are several.
func roundSuffix(round int) string {
	if *mpbRounds <= 1 {
		return ""
	}
	return fmt.Sprintf("_r%d", round+1)
}

// printNamespacesLeft prints whether the benchmarks' namespaces are gone.
func printNamespacesLeft() {
	if left := namespacesLeft(sfNSPrefix, suNSPrefix); len(left) > 0 {
		fmt.Printf("Namespaces LEFT BEHIND: %s\n", strings.Join(left, " "))
	} else {
		fmt.Printf("Namespaces: every one this run created (%s-%d-*, %s-%d-*) is removed.\n", sfNSPrefix, os.Getpid(), suNSPrefix, os.Getpid())
	}
}

// --- (b) Failover -----------------------------------------------------------------

// failMode is how path 1 dies.
type failMode struct {
	name string
	fail func(g *sfRig) error
}

var failModes = []failMode{
	{"blackhole", func(g *sfRig) error {
		return g.r.Nft(`table inet mpsf_fail {
	chain pre {
		type filter hook prerouting priority -300;
		iifname "sfc1" counter drop
	}
	chain post {
		type filter hook postrouting priority 300;
		oifname "sfc1" counter drop
	}
}
`)
	}},
	{"link-down", func(g *sfRig) error {
		_, err := g.r.Run("ip", "link", "set", sfRouterIfc(1), "down")
		return err
	}},
}

// failRow is one mode in one setup.
type failRow struct {
	round              int
	mode               string
	setup              sfSetup
	res                sfXferResult
	subs               [2]sfSubBytes
	retransC, retransS uint64
	kernelCC           string
	failErr            error
}

// failSettle is how long after data flows again the goodput on the
// surviving path is measured from: at the end of the gap the receiver
// delivers at once what path 2 brought meanwhile behind the hole.
const failSettle = time.Second

// after describes one direction after the failure: the longest time its
// reader got nothing, when it got data again (since the failure), and the
// goodput from failSettle later to the end.
func (r failRow) after(d sfDir) (gap, resumed time.Duration, mbit float64) {
	gap, resumed = d.gapAfter(r.res.firedAt)
	from := r.res.firedAt + resumed + failSettle
	if rest := d.elapsed - from; rest > 0 {
		mbit = float64(d.received-d.bytesAt(from)) * 8 / rest.Seconds() / 1e6
	}
	return gap, resumed, mbit
}

// failPaths are the failover benchmark's paths: simult_flows' balanced
// case.
var failPaths = [2]sfPath{{Mbit: 10, Delay: time.Millisecond}, {Mbit: 10, Delay: time.Millisecond}}

// BenchmarkMultipathFailover moves 16 MiB each way at once over two paths
// of 10 Mbit/s and 1 ms (the router topology of
// BenchmarkMultipathAggregation) and kills path 1, the initial subflow's,
// once the server has received a quarter of the client's data: either
// every packet on it is dropped in the router, both ways, without a
// signal to anyone (blackhole, nftables), or the router's interface of
// that path goes down (link-down: the router drops what the client sends
// on it and answers what the server sends to the client's path-1 address
// with ICMP network unreachable). Reported per direction: the longest
// time the receiving application got no data after the failure (the
// gap), when data flowed again (since the failure), the goodput from then
// on (path 2 alone carries 10 Mbit/s), bytes lost (SHA-256 checked: must
// be 0), and the data-level retransmissions of each end. Ratios are
// against kernel-kernel.
//
//	go test ./conformance/ -run '^$' -bench '^BenchmarkMultipathFailover$' -benchtime 1x
func BenchmarkMultipathFailover(b *testing.B) {
	netns.RequireMPTCP(b)
	netns.RequireTools(b, "tc", "ss", "nstat", "nft")
	load := backgroundLoad()
	n := *mpbSize
	ccClient, ccServer := mpbCCs()
	var rows []failRow
	for round := range *mpbRounds {
		for _, mode := range failModes {
			if !mpbSelected(*mpbCases, mode.name) {
				continue
			}
			for _, setup := range sfSetups {
				if !mpbSelected(*mpbSetups, setup.String()) {
					continue
				}
				b.Run(mode.name+"_"+setup.String()+roundSuffix(round), benchOnce(func(b *testing.B) {
					g := newSFRig(b, setup, failPaths, ccClient, ccServer)
					cl, sv := g.open(b)
					c0, s0 := g.retrans(b)
					row := failRow{round: round, mode: mode.name, setup: setup}
					row.res = sfTransfer(cl, sv, sfXfer{n: n, timeout: 3 * time.Minute, trigger: n / 4, fire: func() {
						row.failErr = mode.fail(g)
					}})
					if row.failErr != nil {
						b.Fatalf("failing path 1: %v", row.failErr)
					}
					row.subs = g.clientSubflows(b, cl)
					row.kernelCC = g.kernelCC(b)
					c1, s1 := g.retrans(b)
					row.retransC, row.retransS = c1-c0, s1-s0
					for _, d := range []struct {
						name string
						d    sfDir
					}{{"client->server", row.res.c2s}, {"server->client", row.res.s2c}} {
						if d.d.err != nil {
							b.Errorf("%s: %v", d.name, d.d.err)
						}
					}
					rows = append(rows, row)
					_, rc, _ := row.after(row.res.c2s)
					_, rs, _ := row.after(row.res.s2c)
					b.ReportMetric(float64(rc)/1e6, "c2s-resume-ms")
					b.ReportMetric(float64(rs)/1e6, "s2c-resume-ms")
					b.ReportMetric(row.res.elapsed.Seconds(), "s")
					b.ReportMetric(0, "ns/op")
					// The dead path's subflows cannot close cleanly: do
					// not wait for them.
					cl.Close()
					sv.Close()
				}))
			}
		}
	}
	ref := func(r failRow) (failRow, bool) {
		for _, k := range rows {
			if k.round == r.round && k.mode == r.mode && !k.setup.engineClient && !k.setup.engineServer {
				return k, true
			}
		}
		return failRow{}, false
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "\nround\tpath 1 dies\tclient-server\tat s\ttotal s\tc→s gap ms\tc→s resumed ms\tc→s after Mbit/s\ts→c gap ms\ts→c resumed ms\ts→c after Mbit/s\tlost bytes c→s/s→c\tdata retx c/s\tc→s MiB p1+p2\ts→c MiB p1+p2\tresumed vs k-k c→s/s→c\ttotal vs k-k\t\n")
	for _, r := range rows {
		gc, rc, mc := r.after(r.res.c2s)
		gs, rs, ms := r.after(r.res.s2c)
		lost := func(d sfDir) string {
			if d.err == nil {
				return "0"
			}
			return fmt.Sprintf("%d (%v)", d.lost(), d.err)
		}
		vsK, totK := "-", "-"
		if k, ok := ref(r); ok {
			_, krc, _ := k.after(k.res.c2s)
			_, krs, _ := k.after(k.res.s2c)
			vsK = fmt.Sprintf("%.2f/%.2f", float64(rc)/float64(krc), float64(rs)/float64(krs))
			totK = fmt.Sprintf("%.2f", r.res.elapsed.Seconds()/k.res.elapsed.Seconds())
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%.2f\t%.2f\t%s\t%s\t%.2f\t%s\t%s\t%.2f\t%s/%s\t%d/%d\t%.1f+%.1f\t%.1f+%.1f\t%s\t%s\t\n",
			r.round+1, r.mode, r.setup, r.res.firedAt.Seconds(), r.res.elapsed.Seconds(),
			msec(gc), msec(rc), mc, msec(gs), msec(rs), ms, lost(r.res.c2s), lost(r.res.s2c),
			r.retransC, r.retransS, mib(r.subs[0].acked), mib(r.subs[1].acked), mib(r.subs[0].received), mib(r.subs[1].received), vsK, totK)
	}
	tw.Flush()
	if *mpbRounds > 1 {
		failSummary(rows)
	}
	var kcc []string
	for _, r := range rows {
		if r.kernelCC != "-" && !slices.Contains(kcc, r.kernelCC) {
			kcc = append(kcc, r.kernelCC)
		}
	}
	fmt.Printf(`Congestion control of the senders (client/server): %s (kernel subflows still up at the end, as ss shows them: %s).
%d MiB each way at once (SHA-256 checked); path 1 (the initial subflow's) fails once the server has received %d MiB; "at": when the
failure was in place, since the first write. gap: the longest time the receiving application got no data after the failure; resumed: from the
failure until the end of that gap; after: goodput from 1 s later to the end (path 2 alone: 10 Mbit/s on the wire, about 9.3 of goodput with
both directions loaded). lost bytes: bytes that never arrived intact.
MiB p1+p2: per subflow as the client counts it (c->s acked, s->c received), dead subflows included while their counters are known.
Paths: the router topology of BenchmarkMultipathAggregation, both 10 Mbit/s (tbf in the router) and 1 ms each way (internal/impair).
blackhole: nftables in the router drops everything entering or leaving its path-1 TUN; link-down: ip link set down of that TUN.
Background load: %s.
Command: %s
`, ccClient+"/"+ccServer, strings.Join(kcc, " "), n>>20, n>>22, load, benchCommand())
	printNamespacesLeft()
}

// failSummary prints each mode and setup's means over the rounds.
func failSummary(rows []failRow) {
	type key struct {
		mode  string
		setup sfSetup
	}
	var order []key
	by := map[key][]failRow{}
	for _, r := range rows {
		k := key{r.mode, r.setup}
		if by[k] == nil {
			order = append(order, k)
		}
		by[k] = append(by[k], r)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "\nover the rounds\tclient-server\trounds\tc→s resumed ms mean (min-max)\ts→c resumed ms mean (min-max)\tafter Mbit/s c→s/s→c mean\ttotal s mean\tlost bytes\t\n")
	for _, k := range order {
		rs := by[k]
		var rc, rs2, ac, as, tot float64
		lo := [2]time.Duration{time.Hour, time.Hour}
		var hi [2]time.Duration
		var lost int64
		for _, r := range rs {
			_, c, mc := r.after(r.res.c2s)
			_, s, ms := r.after(r.res.s2c)
			n := float64(len(rs))
			rc, rs2 = rc+float64(c)/1e6/n, rs2+float64(s)/1e6/n
			ac, as = ac+mc/n, as+ms/n
			tot += r.res.elapsed.Seconds() / n
			lo[0], lo[1] = min(lo[0], c), min(lo[1], s)
			hi[0], hi[1] = max(hi[0], c), max(hi[1], s)
			lost += r.res.c2s.lost() + r.res.s2c.lost()
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.0f (%s-%s)\t%.0f (%s-%s)\t%.2f/%.2f\t%.2f\t%d\t\n", k.mode, k.setup, len(rs),
			rc, msec(lo[0]), msec(hi[0]), rs2, msec(lo[1]), msec(hi[1]), ac, as, tot, lost)
	}
	tw.Flush()
}

// --- (c) Unshaped ---------------------------------------------------------------------

// suRow is one stack, subflow count, direction and kernel socket
// configuration.
type suRow struct {
	stack    string
	subflows int
	dir      string // who sends (the client)
	kcfg     string // the kernel sockets' configuration
	kernel   bool   // the kernel-kernel baseline
	m        suResult
	zw       map[string]uint64 // zero-window counters of the receiver's namespace
}

func (r suRow) same(o suRow) bool {
	return r.stack == o.stack && r.subflows == o.subflows && r.dir == o.dir && r.kcfg == o.kcfg
}

// zeroWindowCounters are the kernel's receive-window counters shown for
// the runs reported apart.
var zeroWindowCounters = []string{"TcpExtTCPWantZeroWindowAdv", "TcpExtTCPToZeroWindowAdv", "TcpExtTCPFromZeroWindowAdv", "TcpExtTCPZeroWindowDrop", "TcpExtTCPRcvQDrop"}

func zeroWindowDelta(ns *netns.NS, before map[string]uint64) map[string]uint64 {
	after, err := ns.Counters()
	if err != nil {
		return nil
	}
	d := map[string]uint64{}
	for _, k := range zeroWindowCounters {
		d[k] = after[k] - before[k]
	}
	return d
}

// mpbRcvbuf is the kernel's good configuration for bulk MPTCP: a fixed
// 16 MiB receive buffer (SO_RCVBUF, here SO_RCVBUFFORCE).
const mpbRcvbuf = 16 << 20

// BenchmarkMultipathUnshaped measures two unshaped paths: the engine over
// two TUNs to a kernel namespace with one subflow and with two (the
// server announces its second address, the client joins it), each
// direction (the client sends), against the kernel's MPTCP between two
// namespaces over two veth pairs; throughput and CPU per GB (the
// machine's busy time from /proc/stat, and this process's). Kernel
// sockets have a fixed 16 MiB receive buffer (SO_RCVBUF), the kernel's
// good configuration. A second table has the kernel with autotuned
// buffers, whose kernel-to-kernel MPTCP over a lossless veth is known to
// stall on a zero window; it shows the receiver's zero-window counters
// and the longest time its reader waited.
//
//	go test ./conformance/ -run '^$' -bench '^BenchmarkMultipathUnshaped$' -benchtime 1x
//
// -conformance.mpbench.bulk sets the bytes per transfer (1 GiB);
// -conformance.mpbench.rounds N measures every row N times (figures are
// totals).
func BenchmarkMultipathUnshaped(b *testing.B) {
	netns.RequireMPTCP(b)
	netns.RequireTools(b, "ss", "nstat")
	load := backgroundLoad()
	n := *mpbBulk
	nApart := min(n, 256<<20) // the stalls are slow
	defaultCC := "?"
	const timeout = 2 * time.Minute
	// The kernel sockets' configurations: the good one (main table) and
	// the others (reported apart).
	cc, _ := mpbCCs()
	good := sockOpts{cc: cc, rcvbuf: mpbRcvbuf}
	autotuned := sockOpts{cc: cc}
	name := func(o sockOpts) string {
		cc := o.cc
		if cc == "" {
			cc = "namespace default cc"
		}
		if o.rcvbuf > 0 {
			return fmt.Sprintf("%s, SO_RCVBUF %d MiB", cc, o.rcvbuf>>20)
		}
		return cc + ", autotuned"
	}
	var rows, apart []*suRow
	record := func(list *[]*suRow, r suRow, m suResult) {
		for _, x := range *list {
			if x.same(r) {
				x.m.add(m)
				for k, v := range r.zw {
					x.zw[k] += v
				}
				return
			}
		}
		r.m = m
		*list = append(*list, &r)
	}
	b.Run("engine-kernel-tun", benchOnce(func(b *testing.B) {
		g := newSUEngineKernel(b, cc)
		for range *mpbRounds {
			for _, sub := range []int{1, 2} {
				for _, engineSends := range []bool{true, false} {
					for _, o := range []sockOpts{good, autotuned} {
						if o == autotuned && !engineSends {
							continue // the kernel's receive buffer only matters when it receives
						}
						r := suRow{stack: "engine/tun", subflows: sub, dir: "engine→kernel", kcfg: name(o)}
						if !engineSends {
							r.dir = "kernel→engine"
						}
						w, rd := g.pair(b, engineSends, sub, o)
						before, _ := g.k.Counters()
						size := n
						if o != good {
							size = nApart
						}
						m := bulkTransfer(w, rd, size, timeout)
						if m.err != nil {
							b.Errorf("%s %d subflows %s (%s): %v", r.stack, sub, r.dir, r.kcfg, m.err)
						}
						r.zw = zeroWindowDelta(g.k, before)
						if o == good {
							record(&rows, r, m)
						} else {
							record(&apart, r, m)
						}
					}
				}
			}
		}
		b.ReportMetric(0, "ns/op")
	}))
	b.Run("kernel-kernel-veth", benchOnce(func(b *testing.B) {
		g := newSUKernelVeth(b)
		defaultCC = kernelCC(g.a)
		for range *mpbRounds {
			for _, sub := range []int{1, 2} {
				for _, o := range []sockOpts{good, autotuned, {rcvbuf: mpbRcvbuf}, {}} {
					r := suRow{stack: "kernel/veth", subflows: sub, dir: "kernel→kernel", kernel: true, kcfg: name(o)}
					w, rd := g.pair(b, sub, o)
					before, _ := g.b.Counters()
					size := n
					if o != good {
						size = nApart
					}
					m := bulkTransfer(w, rd, size, timeout)
					r.zw = zeroWindowDelta(g.b, before)
					if o != good {
						// A stall is what these rows show, not a failure.
						record(&apart, r, m)
						continue
					}
					if m.err != nil {
						b.Errorf("%s %d subflows (%s): %v", r.stack, sub, r.kcfg, m.err)
					}
					record(&rows, r, m)
				}
			}
		}
		b.ReportMetric(0, "ns/op")
	}))

	kernelRef := func(sub int) *suRow {
		for _, x := range rows {
			if x.kernel && x.subflows == sub {
				return x
			}
		}
		return nil
	}
	ratio := func(a, b float64) string {
		if b == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", a/b)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "\nstack/link\tsubflows\tclient sends\tMB/s\tcpu-s/GB\tproc-cpu-s/GB\tMB/s 2 vs 1 subflow\tMB/s vs kernel\tcpu/GB vs kernel\tlongest read wait ms\tstalls\tEOF wait ms\tMB/s excl. stalls\tvs kernel excl. stalls\t\n")
	for _, r := range rows {
		vs1, vsK, cpuK, vsKns := "-", "-", "-", "-"
		if r.subflows == 2 {
			for _, one := range rows {
				if one.same(suRow{stack: r.stack, subflows: 1, dir: r.dir, kcfg: r.kcfg}) {
					vs1 = ratio(r.m.mbps(), one.m.mbps())
				}
			}
		}
		if k := kernelRef(r.subflows); k != nil && !r.kernel {
			vsK, cpuK = ratio(r.m.mbps(), k.m.mbps()), ratio(r.m.cpuPerGB(), k.m.cpuPerGB())
			vsKns = ratio(r.m.mbpsNoStalls(), k.m.mbpsNoStalls())
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%.0f\t%.2f\t%.2f\t%s\t%s\t%s\t%s\t%d\t%s\t%.0f\t%s\t\n", r.stack, r.subflows, r.dir, r.m.mbps(), r.m.cpuPerGB(), r.m.procPerGB(),
			vs1, vsK, cpuK, msec(r.m.maxGap), r.m.stalls, msec(r.m.finWait), r.m.mbpsNoStalls(), vsKns)
	}
	tw.Flush()
	fmt.Printf("\nother kernel socket configurations (reported apart; %d MiB per transfer):\n", nApart>>20)
	tw = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "stack/link\tsubflows\tclient sends\tkernel sockets\tMB/s\tcpu-s/GB\tlongest read wait ms\tstalls\tEOF wait ms\tresult\treceiver's zero-window counters\t\n")
	for _, r := range apart {
		res := "complete"
		if r.m.err != nil {
			res = r.m.err.Error()
		}
		var zw []string
		for _, k := range zeroWindowCounters {
			zw = append(zw, fmt.Sprintf("%s=%d", strings.TrimPrefix(k, "TcpExtTCP"), r.zw[k]))
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%.0f\t%.2f\t%s\t%d\t%s\t%s\t%s\t\n", r.stack, r.subflows, r.dir, r.kcfg, r.m.mbps(), r.m.cpuPerGB(), msec(r.m.maxGap),
			r.m.stalls, msec(r.m.finWait), res, strings.Join(zw, " "))
	}
	tw.Flush()
	ccName := cc
	if ccName == "" {
		ccName = "the namespaces' default"
	}
	fmt.Printf(`Main table: %d MiB per transfer, %d round(s) (figures are totals), one direction at a time, the client sending; MTU 1500; nothing shaped
or delayed. Congestion control of every sender: %s; kernel sockets: SO_RCVBUF 16 MiB (SO_RCVBUFFORCE, fixed), the kernel's good configuration.
engine/tun: the engine with a NIC per TUN (default offloads: GRO, GSO), a kernel namespace at the other ends; kernel/veth: two namespaces joined
by two veth pairs. 2 subflows: the server announces its path-2 address (signal endpoint), the client (limits 1 1) joins it from its own.
cpu-s/GB: busy CPU time of the whole machine (/proc/stat, softirqs included, anything else running too) per 10^9 bytes; proc-cpu-s/GB: this
process's (the engine, the Go readers and writers, and the kernel work done on their system calls). Ratios: against kernel/veth with the same
subflow count. Apart: the kernel sockets autotuned (the engine sending, two kernels), and two kernels with the namespaces' default congestion
control (%s). longest read wait: the longest time the receiving application waited for data; stalls: waits of 100 ms or more (all
rounds); EOF wait: the longest wait for the end of the stream after the last byte (included in MB/s); MB/s excl. stalls: with the
stalls' time taken out; zero-window counters: nstat deltas in the receiver's namespace.
Background load: %s.
Command: %s
`, n>>20, *mpbRounds, ccName, defaultCC, load, benchCommand())
	printNamespacesLeft()
}
