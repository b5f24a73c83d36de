package pcaps

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"time"

	"github.com/mptund/mptund/checksum"
	"github.com/mptund/mptund/handshake"
	"github.com/mptund/mptund/options"
)

// Connection roles and subflow directions. A role indexes per-host state of
// a connection (0 = the client that sent the MP_CAPABLE SYN); a direction
// indexes per-direction state of a subflow (0 = from the host that sent the
// subflow's SYN). A subflow's direction maps to the sender's role through
// flow.rev.
const (
	client = 0
	server = 1
)

var roleName = [2]string{"client", "server"}

// Analyze groups the TCP flows of pkts into MPTCP connections and runs the
// checks described in the package documentation. pkts must be in capture
// order (as [Read] returns them); Analyze does not modify them and keeps
// references to their payloads only while it runs.
//
// Checks that need a key, a complete mapping or uncut payload are counted
// as not checked when the capture lacks it; checks that depend on keys
// (join and ADD_ADDR HMACs, MP_FASTCLOSE) are evaluated after the whole
// capture has been read, so the order in which a multi-interface capture
// interleaves the handshakes does not matter.
func Analyze(pkts []Packet) *Report {
	a := &analyzer{
		pkts:   pkts,
		r:      &Report{Connections: []*Connection{}, Problems: []Problem{}, NotChecked: []Problem{}},
		flows:  make(map[flowKey]*flow),
		tokens: make(map[uint32]tokenRef),
		checks: make(map[string]*CheckStat),
	}
	for _, name := range checkOrder {
		a.checks[name] = &CheckStat{Name: name}
	}
	for i := range pkts {
		a.packet(i)
	}
	a.finish()
	return a.r
}

type flowKey struct{ a, b netip.AddrPort }

func keyOf(p *Packet) flowKey {
	if p.Src.Compare(p.Dst) < 0 {
		return flowKey{p.Src, p.Dst}
	}
	return flowKey{p.Dst, p.Src}
}

type tokenRef struct {
	cs   *connState
	role int
}

type analyzer struct {
	pkts       []Packet
	r          *Report
	flows      map[flowKey]*flow
	allFlows   []*flow
	conns      []*connState
	tokens     map[uint32]tokenRef // latest connection per token
	checks     map[string]*CheckStat
	reassembly int // bytes buffered in reassembly buffers
}

// flow is one TCP flow (one 4-tuple incarnation).
type flow struct {
	client, server netip.AddrPort
	known          bool // the SYN or SYN/ACK was seen, so the roles are known
	synSeen        bool // the SYN was captured
	dirs           [2]flowDir
	mptcp          bool // an MPTCP option (even a malformed one) was seen
	cs             *connState
	sf             *Subflow
	rev            int // 1 when the subflow's client is the connection's server
	join           *joinState
	synackSeen     bool
	firstACKSeen   bool // the client's first non-SYN segment after the SYN/ACK
	resetSeen      bool
}

// joinState keeps what the join HMAC checks need (RFC 8684 §3.2).
type joinState struct {
	nonce     [2]uint32 // by subflow direction: initiator, listener
	haveNonce [2]bool
	synacks   []joinSYNACK
	acks      []joinACK
}

type joinSYNACK struct {
	frame int
	nonce uint32
	hmac  uint64
}

type joinACK struct {
	frame int
	hmac  [20]byte
}

const maxJoinRecords = 8

// connState is the analyzer's state of one MPTCP connection.
type connState struct {
	c          *Connection
	keys       [2]uint64
	haveKey    [2]bool
	keyFrame   [2]int
	dirs       [2]connDir // by sender role
	fallen     bool
	addAddrs   []addAddrRec
	fastcloses []fastcloseRec
	flows      []*flow
}

// connDir is the data-level state of one direction, indexed by the role of
// the host that sends the data.
type connDir struct {
	ref      uint64 // last DSN seen, for 32-bit expansion
	haveRef  bool
	minDSN   uint64 // lowest DSN used by data or DATA_FIN
	minFrame int
	haveMin  bool
	maxEnd   uint64 // highest DSN + length of data (DATA_FIN excluded)
	endFrame int
	haveEnd  bool
	fin      uint64
	finFrame int
	haveFIN  bool
	maxAck   uint64 // highest DATA_ACK for this direction's data
	ackFrame int
	haveAck  bool
}

type addAddrRec struct {
	frame, subflow int
	role           int
	opt            options.AddAddr
}

type fastcloseRec struct {
	frame, subflow int
	role           int
	key            uint64
}

func (a *analyzer) pass(check string) { a.checks[check].Passed++ }

func (a *analyzer) fail(frame int, check, format string, args ...any) {
	a.checks[check].Failed++
	a.r.Problems = append(a.r.Problems, Problem{Frame: frame, Check: check, Detail: fmt.Sprintf(format, args...)})
}

func (a *analyzer) skip(frame int, check, format string, args ...any) {
	a.checks[check].NotChecked++
	a.r.NotChecked = append(a.r.NotChecked, Problem{Frame: frame, Check: check, Detail: fmt.Sprintf(format, args...)})
}

// where names a subflow in problem details.
func where(f *flow) string {
	if f.cs == nil || f.sf == nil {
		return fmt.Sprintf("%s -> %s", f.client, f.server)
	}
	return fmt.Sprintf("conn %d subflow %d", f.cs.c.ID, f.sf.ID)
}

func (a *analyzer) newFlow(k flowKey, cl, sv netip.AddrPort) *flow {
	f := &flow{client: cl, server: sv}
	a.flows[k] = f
	a.allFlows = append(a.allFlows, f)
	return f
}

// packet processes pkts[i].
func (a *analyzer) packet(i int) {
	p := &a.pkts[i]
	k := keyOf(p)
	f := a.flows[k]
	syn, ack := p.Flags&FlagSYN != 0, p.Flags&FlagACK != 0
	newSYN := false
	switch {
	case syn && !ack:
		// A SYN with a new ISN starts a new incarnation of the 4-tuple; a
		// retransmitted SYN does not.
		if f == nil || !f.known || f.client != p.Src || !f.dirs[0].haveISN || f.dirs[0].isn != p.Seq {
			f = a.newFlow(k, p.Src, p.Dst)
			f.known, f.synSeen = true, true
			f.dirs[0].isn, f.dirs[0].haveISN = p.Seq, true
			newSYN = true
		}
	case f == nil && syn && ack:
		f = a.newFlow(k, p.Dst, p.Src) // the SYN was not captured
		f.known = true
		f.dirs[0].isn, f.dirs[0].haveISN = p.Ack-1, true
	case f == nil:
		f = a.newFlow(k, p.Src, p.Dst)
	}
	a.r.Stats.TCPPackets++
	fd := 0
	if p.Src != f.client {
		fd = 1
	}
	a.optionChecks(f, p)
	if len(p.MPTCP) > 0 || hasOptionError(p) {
		f.mptcp = true
	}
	if newSYN {
		a.syn(f, p)
	}
	if syn && ack && fd == 1 {
		a.synAck(f, p)
	}
	if !syn && fd == 0 && f.synackSeen && !f.firstACKSeen {
		f.firstACKSeen = true
		a.firstACK(f, p)
	}
	if fd == 0 && !syn && ack && f.known && !f.dirs[1].haveISN {
		f.dirs[1].isn, f.dirs[1].haveISN = p.Ack-1, true
	}
	cs := f.cs
	if cs == nil {
		return
	}
	cs.c.LastFrame = p.Index
	for _, o := range p.MPTCP {
		a.option(f, p, fd, o)
	}
	a.payload(f, p, fd, i)
	a.flags(f, p, fd)
}

// hasOptionError reports whether p has a malformed MPTCP option.
func hasOptionError(p *Packet) bool {
	for _, err := range p.OptErrors {
		var oe *OptionError
		if errors.As(err, &oe) {
			return true
		}
	}
	return false
}

// optionChecks counts each MPTCP option as a passed option check and each
// malformed one as a failure (RFC 8684 §3: a wrong length for a known
// subtype is malformed). An MP_CAPABLE of another version is not
// malformed, only outside what the analyzer checks.
func (a *analyzer) optionChecks(f *flow, p *Packet) {
	for range p.MPTCP {
		a.pass(CheckOption)
	}
	for _, err := range p.OptErrors {
		if errors.Is(err, options.ErrBadVersion) {
			a.skip(p.Index, CheckOption, "%s: %v (only MPTCP v1 is analyzed)", where(f), err)
			continue
		}
		a.fail(p.Index, CheckOption, "%s: malformed option: %v", where(f), err)
	}
}

// syn handles the first SYN of a flow: an MP_CAPABLE SYN starts a
// connection (RFC 8684 §3.1), an MP_JOIN SYN names one by token (§3.2).
func (a *analyzer) syn(f *flow, p *Packet) {
	for _, o := range p.MPTCP {
		switch o := o.(type) {
		case options.MPCapable:
			if o.Form != options.CapableSYN {
				continue
			}
			a.newConn(f, p, o.Version, o.Flags, true)
			return
		case options.MPJoin:
			if o.Form != options.JoinSYN {
				continue
			}
			ref, ok := a.tokens[o.Token]
			if !ok {
				a.fail(p.Index, CheckJoinToken, "%s: MP_JOIN SYN token %08x names no connection in the capture", where(f), o.Token)
				return
			}
			a.pass(CheckJoinToken)
			f.cs = ref.cs
			f.rev = 0
			if ref.role == client {
				f.rev = 1 // the connection's client is the listener
			}
			f.join = &joinState{}
			f.join.nonce[0], f.join.haveNonce[0] = o.Nonce, true
			f.sf = a.addSubflow(ref.cs, f, p, false)
			f.sf.Token = Hex32(o.Token)
			f.sf.ClientNonce = Hex32(o.Nonce)
			f.sf.ClientAddrID = o.AddrID
			f.sf.Backup = o.Backup
			f.sf.ServerInitiated = f.rev == 1
			return
		}
	}
}

// newConn starts a connection on flow f, whose SYN (synSeen) or SYN/ACK
// carried MP_CAPABLE.
func (a *analyzer) newConn(f *flow, p *Packet, version, flags uint8, synSeen bool) {
	c := &Connection{
		ID:         len(a.conns) + 1,
		Client:     f.client,
		Server:     f.server,
		Version:    version,
		FirstFrame: p.Index,
		LastFrame:  p.Index,
		Subflows:   []*Subflow{},
		Events:     []Event{},
	}
	if synSeen {
		c.ClientFlags = flags
		c.Checksums = flags&options.CapableFlagChecksum != 0
	}
	cs := &connState{c: c}
	a.conns = append(a.conns, cs)
	a.r.Connections = append(a.r.Connections, c)
	f.cs = cs
	f.sf = a.addSubflow(cs, f, p, true)
}

func (a *analyzer) addSubflow(cs *connState, f *flow, p *Packet, initial bool) *Subflow {
	sf := &Subflow{
		ID:         len(cs.c.Subflows) + 1,
		Client:     f.client,
		Server:     f.server,
		Initial:    initial,
		FirstFrame: p.Index,
	}
	cs.c.Subflows = append(cs.c.Subflows, sf)
	cs.flows = append(cs.flows, f)
	return sf
}

// synAck handles a SYN/ACK: the listener's ISN, fallback when an
// MP_CAPABLE SYN is answered without MP_CAPABLE (RFC 8684 §3.1), and the
// listener's half of an MP_JOIN (§3.2).
func (a *analyzer) synAck(f *flow, p *Packet) {
	first := !f.synackSeen
	f.synackSeen = true
	d := &f.dirs[1]
	if !d.haveISN {
		d.isn, d.haveISN = p.Seq, true
	}
	if f.cs == nil && first && !f.synSeen {
		// The SYN was not captured: an MP_CAPABLE SYN/ACK still starts a
		// connection (without the client's SYN flags).
		for _, o := range p.MPTCP {
			if m, ok := o.(options.MPCapable); ok && m.Form == options.CapableSYNACK {
				a.newConn(f, p, m.Version, 0, false)
				break
			}
		}
	}
	if f.cs == nil {
		return
	}
	if f.join == nil {
		var mpc *options.MPCapable
		for _, o := range p.MPTCP {
			if m, ok := o.(options.MPCapable); ok && m.Form == options.CapableSYNACK {
				mpc = &m
			}
		}
		if mpc == nil {
			if first {
				a.fallback(f, p, "SYN/ACK without MP_CAPABLE")
			}
			return
		}
		c := f.cs.c
		c.ServerFlags = mpc.Flags
		c.Checksums = c.Checksums || mpc.Flags&options.CapableFlagChecksum != 0
		c.NoNewSubflows = mpc.Flags&options.CapableFlagNoNewSubflowsToSource != 0
		return
	}
	for _, o := range p.MPTCP {
		j, ok := o.(options.MPJoin)
		if !ok || j.Form != options.JoinSYNACK {
			continue
		}
		f.join.nonce[1], f.join.haveNonce[1] = j.Nonce, true
		f.sf.ServerNonce = Hex32(j.Nonce)
		f.sf.ServerAddrID = j.AddrID
		f.sf.Backup = f.sf.Backup || j.Backup
		if len(f.join.synacks) < maxJoinRecords {
			f.join.synacks = append(f.join.synacks, joinSYNACK{frame: p.Index, nonce: j.Nonce, hmac: j.TruncatedHMAC})
		}
		return
	}
	if first {
		a.event(f, p, 1, "join refused", "SYN/ACK without MP_JOIN")
	}
}

// firstACK handles the client's first segment after the SYN/ACK: without
// any MPTCP option on an MP_CAPABLE subflow it is a fallback (RFC 8684
// §3.1); it establishes the subflow.
func (a *analyzer) firstACK(f *flow, p *Packet) {
	if f.sf != nil {
		f.sf.Established = true
	}
	if f.cs == nil || f.join != nil || f.cs.fallen || len(p.MPTCP) > 0 || len(p.OptErrors) > 0 {
		return
	}
	a.fallback(f, p, "third ACK without MP_CAPABLE")
}

func (a *analyzer) fallback(f *flow, p *Packet, reason string) {
	cs := f.cs
	if cs.fallen {
		return
	}
	cs.fallen = true
	if cs.c.Fallback == "" {
		cs.c.Fallback = reason
		cs.c.FallbackFrame = p.Index
	}
	a.event(f, p, -1, "fallback", reason)
}

// event records an event; dir is the subflow direction of the sender, or
// -1 for the direction of p.
func (a *analyzer) event(f *flow, p *Packet, dir int, kind, detail string) {
	c := f.cs.c
	if len(c.Events) >= MaxEvents {
		c.EventsDropped++
		return
	}
	if dir < 0 {
		dir = 0
		if p.Src != f.client {
			dir = 1
		}
	}
	sfID := 0
	if f.sf != nil {
		sfID = f.sf.ID
	}
	c.Events = append(c.Events, Event{
		Frame: p.Index, Time: jsonTime(p.Time), Subflow: sfID,
		From: roleName[dir^f.rev], Kind: kind, Detail: detail,
	})
}

// jsonTime returns t, or the zero time when encoding/json cannot encode t
// (a year outside 0-9999, from a garbled capture timestamp).
func jsonTime(t time.Time) time.Time {
	if y := t.Year(); y < 0 || y > 9999 {
		return time.Time{}
	}
	return t
}

// setKey records the key of role, checking it against an earlier one
// (RFC 8684 §3.1: keys are echoed unchanged). It reports whether the key
// matched (or was new) and whether it was compared.
func (a *analyzer) setKey(cs *connState, role int, key uint64, frame int) (ok, compared bool) {
	if cs.haveKey[role] {
		return cs.keys[role] == key, true
	}
	cs.keys[role], cs.haveKey[role], cs.keyFrame[role] = key, true, frame
	token, idsn := handshake.TokenAndIDSN(key)
	c := cs.c
	if role == client {
		c.ClientKeyKnown, c.ClientKey, c.ClientToken, c.ClientIDSN = true, Hex64(key), Hex32(token), Hex64(idsn)
	} else {
		c.ServerKeyKnown, c.ServerKey, c.ServerToken, c.ServerIDSN = true, Hex64(key), Hex32(token), Hex64(idsn)
	}
	a.tokens[token] = tokenRef{cs: cs, role: role}
	return true, false
}

// idsn returns the IDSN of role, if its key is known.
func (cs *connState) idsn(role int) (uint64, bool) {
	if !cs.haveKey[role] {
		return 0, false
	}
	if role == client {
		return uint64(cs.c.ClientIDSN), true
	}
	return uint64(cs.c.ServerIDSN), true
}

// expandDSN widens a DSN or Data ACK of the data sent by role.
func (cs *connState) expandDSN(role int, v uint64, is64 bool) uint64 {
	if is64 {
		return v
	}
	d := &cs.dirs[role]
	ref := uint64(0)
	if d.haveRef {
		ref = d.ref
	} else if idsn, ok := cs.idsn(role); ok {
		ref = idsn + 1
	}
	return expand32(uint32(v), ref)
}

// option handles one MPTCP option of a connection's segment.
func (a *analyzer) option(f *flow, p *Packet, fd int, o options.Option) {
	cs := f.cs
	role := fd ^ f.rev
	switch o := o.(type) {
	case options.MPCapable:
		a.mpCapable(f, p, fd, o)
	case options.MPJoin:
		if o.Form == options.JoinACK && fd == 0 && f.join != nil && len(f.join.acks) < maxJoinRecords {
			f.join.acks = append(f.join.acks, joinACK{frame: p.Index, hmac: o.HMAC})
		}
	case options.DSS:
		a.dss(f, p, fd, o)
	case options.AddAddr:
		detail := fmt.Sprintf("id %d %s", o.AddrID, o.Addr)
		if o.HasPort {
			detail = fmt.Sprintf("id %d %s", o.AddrID, netip.AddrPortFrom(o.Addr, o.Port))
		}
		if o.Echo {
			a.event(f, p, fd, "ADD_ADDR echo", detail)
			return
		}
		a.event(f, p, fd, "ADD_ADDR", detail)
		cs.addAddrs = append(cs.addAddrs, addAddrRec{frame: p.Index, subflow: f.sf.ID, role: role, opt: o})
	case options.RemoveAddr:
		a.event(f, p, fd, "REMOVE_ADDR", fmt.Sprintf("ids %v", o.IDs))
	case options.MPPrio:
		f.sf.Backup = o.Backup
		a.event(f, p, fd, "MP_PRIO", fmt.Sprintf("backup %v", o.Backup))
	case options.MPFail:
		cs.c.MPFail = true
		a.event(f, p, fd, "MP_FAIL", fmt.Sprintf("DSN %d", o.DSN))
	case options.MPFastclose:
		cs.c.Fastclose = true
		a.event(f, p, fd, "MP_FASTCLOSE", "")
		cs.fastcloses = append(cs.fastcloses, fastcloseRec{frame: p.Index, subflow: f.sf.ID, role: role, key: o.Key})
	case options.MPTCPRst:
		if p.Flags&FlagRST != 0 && !f.resetSeen {
			f.sf.HasRstReason, f.sf.RstReason = true, o.Reason
		}
	case options.Unknown:
		a.event(f, p, fd, o.Sub.String(), fmt.Sprintf("%x", o.Raw))
	}
}

// mpCapable checks the keys of an MP_CAPABLE option (RFC 8684 §3.1) and
// installs the mapping of an MP_CAPABLE carrying data.
func (a *analyzer) mpCapable(f *flow, p *Packet, fd int, o options.MPCapable) {
	cs := f.cs
	if f.join != nil || o.Form == options.CapableSYN {
		return
	}
	role := fd ^ f.rev
	ok1, cmp1 := a.setKey(cs, role, o.SenderKey, p.Index)
	ok2, cmp2 := true, false
	if o.Form == options.CapableACK || o.Form == options.CapableACKData {
		ok2, cmp2 = a.setKey(cs, 1-role, o.ReceiverKey, p.Index)
	}
	if cmp1 || cmp2 {
		if ok1 && ok2 {
			a.pass(CheckKeys)
		} else {
			a.fail(p.Index, CheckKeys, "%s: MP_CAPABLE %s keys %016x/%016x differ from the %s key %016x (frame %d) / %s key %016x (frame %d)",
				where(f), o.Form, o.SenderKey, o.ReceiverKey,
				roleName[role], cs.keys[role], cs.keyFrame[role], roleName[1-role], cs.keys[1-role], cs.keyFrame[1-role])
		}
	}
	if o.Form != options.CapableACKData || o.DataLen == 0 || cs.fallen {
		return
	}
	// The first data: DSN = sender's IDSN + 1, subflow sequence 1.
	idsn, _ := cs.idsn(role)
	a.addMapping(f, p, fd, &mapping{
		ssn: 1, n: uint64(o.DataLen), dsn: idsn + 1, ssn32: 1, dataLen: o.DataLen,
		hasCsum: o.HasChecksum, csum: o.Checksum, frame: p.Index,
	})
}

// dss handles a DSS option (RFC 8684 §3.3): Data ACK, mapping, DATA_FIN,
// infinite mapping.
func (a *analyzer) dss(f *flow, p *Packet, fd int, o options.DSS) {
	cs := f.cs
	role := fd ^ f.rev
	if o.HasDataAck {
		ack := cs.expandDSN(1-role, o.DataAck, o.DataAck64)
		d := &cs.dirs[1-role]
		if !d.haveAck || ack > d.maxAck {
			d.maxAck, d.ackFrame, d.haveAck = ack, p.Index, true
		}
	}
	if !o.HasMapping {
		return
	}
	dsn := cs.expandDSN(role, o.DSN, o.DSN64)
	d := &cs.dirs[role]
	d.ref, d.haveRef = dsn, true
	if o.IsInfinite() {
		f.dirs[fd].infinite, f.dirs[fd].mapped = true, true
		cs.c.InfiniteMapping = true
		a.event(f, p, fd, "infinite mapping", fmt.Sprintf("DSN %d", dsn))
		a.fallback(f, p, "infinite mapping")
		return
	}
	n := uint64(o.DataLen)
	if o.DataFIN {
		fin := dsn + n - 1
		a.dataFIN(f, p, fd, role, fin)
		n--
	}
	a.useDSN(cs, role, dsn, p.Index)
	if n == 0 || cs.fallen {
		return // DATA_FIN alone (RFC 8684 §3.3.3), or nothing to check
	}
	a.addMapping(f, p, fd, &mapping{
		ssn: expand32(o.SubflowSeq, f.dirs[fd].ref), n: n, dsn: dsn,
		ssn32: o.SubflowSeq, dataLen: o.DataLen,
		hasCsum: o.HasChecksum, csum: o.Checksum, frame: p.Index,
	})
}

// useDSN records that role used data sequence number dsn (for the IDSN
// check).
func (a *analyzer) useDSN(cs *connState, role int, dsn uint64, frame int) {
	d := &cs.dirs[role]
	if !d.haveMin || dsn < d.minDSN {
		d.minDSN, d.minFrame, d.haveMin = dsn, frame, true
	}
}

// dataFIN records a DATA_FIN at data sequence number fin (RFC 8684
// §3.3.3); two different positions in one direction fail CheckDataFIN.
func (a *analyzer) dataFIN(f *flow, p *Packet, fd, role int, fin uint64) {
	cs := f.cs
	d := &cs.dirs[role]
	if d.haveFIN {
		if d.fin != fin {
			a.fail(p.Index, CheckDataFIN, "%s: DATA_FIN at DSN %d, but frame %d put it at DSN %d", where(f), fin, d.finFrame, d.fin)
		}
		return
	}
	d.fin, d.finFrame, d.haveFIN = fin, p.Index, true
	if role == client {
		cs.c.DataFINToServer = true
	} else {
		cs.c.DataFINToClient = true
	}
	a.event(f, p, fd, "DATA_FIN", fmt.Sprintf("DSN %d", fin))
}

// addMapping installs a mapping of subflow direction fd: checks it against
// the remembered ones (RFC 8684 §3.3.1: a subflow byte has one DSN),
// starts its checksum reassembly and re-examines the segments that were
// waiting for a mapping.
func (a *analyzer) addMapping(f *flow, p *Packet, fd int, m *mapping) {
	cs := f.cs
	d := &f.dirs[fd]
	d.mapped = true
	role := fd ^ f.rev
	cd := &cs.dirs[role]
	if e := m.dsn + m.n; !cd.haveEnd || e > cd.maxEnd {
		cd.maxEnd, cd.endFrame, cd.haveEnd = e, p.Index, true
	}
	cd.ref, cd.haveRef = m.dsn, true
	a.useDSN(cs, role, m.dsn, p.Index)
	other, dup := d.conflict(m)
	if dup {
		a.copyOfMapping(f, p, other, m)
		return
	}
	if other != nil {
		lo, hi := max(m.ssn, other.ssn), min(m.end(), other.end())
		a.fail(p.Index, CheckMapping, "%s: subflow bytes %d-%d mapped to DSN %d here but to DSN %d in frame %d",
			where(f), lo, hi-1, m.dsn+(lo-m.ssn), other.dsn+(lo-other.ssn), other.frame)
	} else {
		a.pass(CheckMapping)
	}
	switch {
	case cs.c.Checksums && !m.hasCsum:
		a.fail(p.Index, CheckChecksum, "%s: mapping DSN %d ssn %d len %d has no checksum although checksums were negotiated",
			where(f), m.dsn, m.ssn32, m.dataLen)
	case !cs.c.Checksums && m.hasCsum:
		a.fail(p.Index, CheckChecksum, "%s: mapping DSN %d ssn %d len %d carries a checksum although checksums were not negotiated",
			where(f), m.dsn, m.ssn32, m.dataLen)
	case m.hasCsum:
		if a.reassembly+int(m.n) > MaxReassemblyBytes {
			a.skip(p.Index, CheckChecksum, "%s: mapping DSN %d not checked: reassembly limit (%d bytes) reached", where(f), m.dsn, MaxReassemblyBytes)
			break
		}
		m.rs = newReassembly(int(m.n))
		a.reassembly += int(m.n)
	}
	if ev := d.insert(m); ev != nil && ev.rs != nil {
		a.dropReassembly(ev)
		a.skip(ev.frame, CheckChecksum, "%s: mapping DSN %d not checked: more than %d mappings remembered", where(f), ev.dsn, MaxMappings)
		a.skipAlt(f, ev, fmt.Sprintf("more than %d mappings remembered", MaxMappings))
	}
	// Bytes captured before this mapping: segments waiting for one, and
	// recent segments other mappings covered (the mapping is then a
	// re-send with other boundaries, consistent ones since no conflict
	// was found, and its checksum covers them too).
	if m.rs != nil && m.ssn < d.maxEnd {
		for _, s := range d.recent {
			if s.end > m.ssn && s.start < m.end() {
				a.feed(f, m, s.start, &a.pkts[s.pkt])
			}
		}
	}
	kept := d.uncovered[:0]
	for _, s := range d.uncovered {
		if s.end > m.ssn && s.start < m.end() {
			a.feed(f, m, s.start, &a.pkts[s.pkt])
		}
		if d.covered(s.start, s.end) {
			a.pass(CheckMapping)
			continue
		}
		kept = append(kept, s)
	}
	d.uncovered = kept
}

// copyOfMapping handles a mapping m mapping the same subflow bytes to the
// same DSNs as the remembered mapping o (RFC 8684 §3.3.1: a mapping may ride
// again on any segment it covers). A copy with the same data-level length
// must carry the same checksum. A copy with the other data-level length
// (the DATA_FIN added or removed) legitimately carries another checksum,
// since the pseudo-header holds the length: it is verified against its own
// length over the same payload, now if the payload was already seen, or
// when it is complete.
func (a *analyzer) copyOfMapping(f *flow, p *Packet, o, m *mapping) {
	if !o.hasCsum || !m.hasCsum {
		return
	}
	if m.dataLen == o.dataLen {
		if m.csum != o.csum {
			a.fail(p.Index, CheckChecksum, "%s: mapping DSN %d ssn %d len %d repeated with checksum %04x, frame %d sent %04x",
				where(f), m.dsn, m.ssn32, m.dataLen, m.csum, o.frame, o.csum)
		}
		return
	}
	if o.alt != nil {
		if m.csum != o.alt.csum {
			a.fail(p.Index, CheckChecksum, "%s: mapping DSN %d ssn %d len %d repeated with checksum %04x, frame %d sent %04x",
				where(f), m.dsn, m.ssn32, m.dataLen, m.csum, o.alt.frame, o.alt.csum)
		}
		return
	}
	o.alt = &altVersion{dataLen: m.dataLen, csum: m.csum, frame: p.Index}
	switch {
	case o.rs != nil:
		// Verified with o once its payload is complete (feed).
	case o.haveSum:
		a.verifyAlt(f, o)
	default:
		a.skip(p.Index, CheckChecksum, "%s: mapping DSN %d ssn %d len %d not checked: the payload of its copy of frame %d was not checked either",
			where(f), m.dsn, m.ssn32, m.dataLen, o.frame)
	}
}

// verifyDSS checks a DSS checksum from the pseudo-header fields and the
// payload's sum.
func verifyDSS(dsn uint64, ssn uint32, dataLen uint16, paySum uint16, payLen uint64, wire uint16) (ok bool, computed uint16) {
	s := checksum.NewDSS(dsn, ssn, dataLen)
	s.AddPartial(paySum, payLen)
	return s.Checksum() == wire, s.Checksum()
}

// verifyAlt verifies the checksum of m's copy with the other data-level
// length over m's payload sum.
func (a *analyzer) verifyAlt(f *flow, m *mapping) {
	alt := m.alt
	if ok, got := verifyDSS(m.dsn, m.ssn32, alt.dataLen, m.paySum, m.n, alt.csum); ok {
		a.pass(CheckChecksum)
	} else {
		a.fail(alt.frame, CheckChecksum, "%s: DSS checksum %04x of mapping DSN %d ssn %d len %d (re-sent %s the DATA_FIN) does not verify (computed %04x)",
			where(f), alt.csum, m.dsn, m.ssn32, alt.dataLen, map[bool]string{true: "with", false: "without"}[alt.dataLen > m.dataLen], got)
	}
}

// skipAlt reports m's copy with the other data-level length as not checked.
func (a *analyzer) skipAlt(f *flow, m *mapping, why string) {
	if m.alt != nil {
		a.skip(m.alt.frame, CheckChecksum, "%s: mapping DSN %d ssn %d len %d not checked: %s", where(f), m.dsn, m.ssn32, m.alt.dataLen, why)
	}
}

// payload checks that the segment's payload is mapped (RFC 8684 §3.3.1)
// and feeds it to the reassembly of the mappings covering it.
func (a *analyzer) payload(f *flow, p *Packet, fd, idx int) {
	if p.PayloadLen == 0 {
		return
	}
	d := &f.dirs[fd]
	if !d.haveISN {
		return
	}
	seq := p.Seq
	if p.Flags&FlagSYN != 0 {
		seq++ // data on a SYN starts after it
	}
	start := d.rel(seq)
	end := start + uint64(p.PayloadLen)
	d.maxEnd = max(d.maxEnd, end)
	cs := f.cs
	if cs.fallen || d.infinite {
		return
	}
	d.remember(segRef{start: start, end: end, pkt: idx})
	if !d.mapped && len(p.MPTCP) == 0 && len(p.OptErrors) == 0 && f.join == nil && len(cs.flows) == 1 {
		// RFC 8684 §3.7: data without any MPTCP option before the first
		// mapping means the options were stripped; both ends fall back.
		a.fallback(f, p, "data without DSS (MPTCP options missing)")
		return
	}
	for _, m := range d.maps[d.find(start):] {
		if m.ssn >= end {
			break
		}
		if m.rs != nil && m.end() > start {
			a.feed(f, m, start, p)
		}
	}
	if d.covered(start, end) {
		a.pass(CheckMapping)
		return
	}
	if len(d.uncovered) >= MaxUncovered {
		a.skip(p.Index, CheckMapping, "%s: coverage of subflow bytes %d-%d not checked: more than %d segments wait for a mapping",
			where(f), start, end-1, MaxUncovered)
		return
	}
	d.uncovered = append(d.uncovered, segRef{start: start, end: end, pkt: idx})
}

// feed copies the part of segment p (starting at relative sequence start)
// that falls in m into m's reassembly and verifies the DSS checksum once
// every byte has been seen (RFC 8684 §3.3.1).
func (a *analyzer) feed(f *flow, m *mapping, start uint64, p *Packet) {
	rs := m.rs
	if rs == nil {
		return
	}
	lo, hi := max(start, m.ssn), min(start+uint64(p.PayloadLen), m.end())
	if lo >= hi {
		return
	}
	capEnd := start + uint64(len(p.Payload))
	if capEnd > lo {
		cHi := min(hi, capEnd)
		copy(rs.buf[lo-m.ssn:cHi-m.ssn], p.Payload[lo-start:cHi-start])
	}
	if capEnd < hi {
		rs.truncated = true
	}
	rs.mark(int(lo-m.ssn), int(hi-m.ssn))
	if rs.missing > 0 {
		return
	}
	if rs.truncated {
		a.skip(m.frame, CheckChecksum, "%s: mapping DSN %d ssn %d len %d not checked: payload cut by the snap length",
			where(f), m.dsn, m.ssn32, m.dataLen)
		a.skipAlt(f, m, "payload cut by the snap length")
		a.dropReassembly(m)
		return
	}
	var sum checksum.Sum
	sum.Add(rs.buf)
	m.paySum, m.haveSum = sum.Value(), true
	if ok, got := verifyDSS(m.dsn, m.ssn32, m.dataLen, m.paySum, m.n, m.csum); ok {
		a.pass(CheckChecksum)
	} else {
		a.fail(m.frame, CheckChecksum, "%s: DSS checksum %04x of mapping DSN %d ssn %d len %d does not verify (computed %04x)",
			where(f), m.csum, m.dsn, m.ssn32, m.dataLen, got)
	}
	if m.alt != nil {
		a.verifyAlt(f, m)
	}
	a.dropReassembly(m)
}

func (a *analyzer) dropReassembly(m *mapping) {
	if m.rs != nil {
		a.reassembly -= len(m.rs.buf)
		m.rs = nil
	}
}

// flags records FIN and RST (with the MP_TCPRST reason, RFC 8684 §3.6).
func (a *analyzer) flags(f *flow, p *Packet, fd int) {
	if p.Flags&FlagFIN != 0 && !f.dirs[fd].fin {
		f.dirs[fd].fin = true
		if fd == 0 {
			f.sf.FINFromClient = true
		} else {
			f.sf.FINFromServer = true
		}
	}
	if p.Flags&FlagRST == 0 || f.resetSeen {
		return
	}
	f.resetSeen = true
	f.sf.Reset = true
	f.sf.ResetBy = [2]string{"client", "server"}[fd]
	detail := ""
	if f.sf.HasRstReason {
		detail = fmt.Sprintf("MP_TCPRST reason %d: %s", f.sf.RstReason, options.RstReason(f.sf.RstReason))
	}
	a.event(f, p, fd, "RST", detail)
}

// finish runs the checks that need the whole capture and fills the
// report's totals.
func (a *analyzer) finish() {
	for _, cs := range a.conns {
		a.finishConn(cs)
	}
	for _, f := range a.allFlows {
		a.r.Stats.TCPFlows++
		switch {
		case f.cs != nil:
			if f.dirs[0].maxEnd > 0 {
				f.sf.BytesToServer = f.dirs[0].maxEnd - 1
			}
			if f.dirs[1].maxEnd > 0 {
				f.sf.BytesToClient = f.dirs[1].maxEnd - 1
			}
			a.finishFlow(f)
		case f.mptcp:
			a.r.Unanalyzed++
		default:
			a.r.Plain++
		}
	}
	sort.SliceStable(a.r.Problems, func(i, j int) bool { return a.r.Problems[i].Frame < a.r.Problems[j].Frame })
	sort.SliceStable(a.r.NotChecked, func(i, j int) bool { return a.r.NotChecked[i].Frame < a.r.NotChecked[j].Frame })
	st := &a.r.Stats
	for _, name := range checkOrder {
		c := a.checks[name]
		st.Checks = append(st.Checks, *c)
		st.Passed += c.Passed
		st.Failed += c.Failed
		st.NotChecked += c.NotChecked
	}
}

// finishFlow reports the mappings still waiting for bytes and the segments
// still waiting for a mapping.
func (a *analyzer) finishFlow(f *flow) {
	for fd := range f.dirs {
		d := &f.dirs[fd]
		for _, m := range d.maps {
			if m.rs == nil {
				continue
			}
			a.skip(m.frame, CheckChecksum, "%s: mapping DSN %d ssn %d len %d not checked: %d of its bytes are not in the capture",
				where(f), m.dsn, m.ssn32, m.dataLen, m.rs.missing)
			a.skipAlt(f, m, fmt.Sprintf("%d of its bytes are not in the capture", m.rs.missing))
			a.dropReassembly(m)
		}
		for _, s := range d.uncovered {
			a.fail(a.pkts[s.pkt].Index, CheckMapping, "%s: subflow bytes %d-%d (%s) are not covered by any mapping",
				where(f), s.start, s.end-1, roleName[fd]+" to "+roleName[1-fd])
		}
	}
}

// finishConn runs the key-dependent checks of a connection.
func (a *analyzer) finishConn(cs *connState) {
	c := cs.c
	for role := range cs.dirs {
		d := &cs.dirs[role]
		idsn, known := cs.idsn(role)
		if known && d.haveEnd && d.maxEnd > idsn+1 {
			if role == client {
				c.BytesToServer = d.maxEnd - idsn - 1
			} else {
				c.BytesToClient = d.maxEnd - idsn - 1
			}
		}
		if d.haveMin {
			switch {
			case !known:
				a.skip(d.minFrame, CheckIDSN, "conn %d: first DSN of the %s not checked: its key is not in the capture", c.ID, roleName[role])
			case d.minDSN == idsn+1:
				a.pass(CheckIDSN)
			default:
				a.fail(d.minFrame, CheckIDSN, "conn %d: the %s's first DSN is %d, want IDSN+1 = %d (or the capture missed its first data)",
					c.ID, roleName[role], d.minDSN, idsn+1)
			}
		}
		if d.haveFIN {
			ok := true
			if d.haveEnd && d.maxEnd > d.fin {
				ok = false
				a.fail(d.endFrame, CheckDataFIN, "conn %d: the %s mapped data up to DSN %d, beyond its DATA_FIN at DSN %d (frame %d)",
					c.ID, roleName[role], d.maxEnd-1, d.fin, d.finFrame)
			}
			if d.haveAck && d.maxAck > d.fin+1 {
				ok = false
				a.fail(d.ackFrame, CheckDataFIN, "conn %d: DATA_ACK %d acknowledges beyond the %s's DATA_FIN at DSN %d (frame %d)",
					c.ID, d.maxAck, roleName[role], d.fin, d.finFrame)
			}
			if ok {
				a.pass(CheckDataFIN)
			}
		}
	}
	for _, f := range cs.flows {
		if f.join != nil {
			a.finishJoin(cs, f)
		}
	}
	for _, r := range cs.addAddrs {
		if !cs.haveKey[r.role] || !cs.haveKey[1-r.role] {
			a.skip(r.frame, CheckAddAddr, "conn %d subflow %d: ADD_ADDR HMAC not checked: keys not in the capture", c.ID, r.subflow)
			continue
		}
		port := uint16(0)
		if r.opt.HasPort {
			port = r.opt.Port
		}
		if handshake.VerifyAddAddr(cs.keys[r.role], cs.keys[1-r.role], r.opt.AddrID, r.opt.Addr, port, r.opt.HMAC) {
			a.pass(CheckAddAddr)
			continue
		}
		a.fail(r.frame, CheckAddAddr, "conn %d subflow %d: ADD_ADDR id %d %s port %d from the %s: HMAC %016x does not verify (want %016x)",
			c.ID, r.subflow, r.opt.AddrID, r.opt.Addr, port, roleName[r.role], r.opt.HMAC,
			handshake.AddAddrHMAC(cs.keys[r.role], cs.keys[1-r.role], r.opt.AddrID, r.opt.Addr, port))
	}
	for _, r := range cs.fastcloses {
		switch {
		case !cs.haveKey[1-r.role]:
			a.skip(r.frame, CheckFastclose, "conn %d subflow %d: MP_FASTCLOSE key not checked: the %s's key is not in the capture", c.ID, r.subflow, roleName[1-r.role])
		case r.key == cs.keys[1-r.role]:
			a.pass(CheckFastclose)
		default:
			a.fail(r.frame, CheckFastclose, "conn %d subflow %d: MP_FASTCLOSE from the %s carries key %016x, not the %s's key %016x",
				c.ID, r.subflow, roleName[r.role], r.key, roleName[1-r.role], cs.keys[1-r.role])
		}
	}
}

// finishJoin verifies the HMACs of a join subflow (RFC 8684 §3.2). The
// initiator is the subflow's client.
func (a *analyzer) finishJoin(cs *connState, f *flow) {
	j := f.join
	ini, lis := f.rev, 1-f.rev // roles of initiator and listener
	keysKnown := cs.haveKey[ini] && cs.haveKey[lis]
	for _, r := range j.synacks {
		switch {
		case !keysKnown:
			a.skip(r.frame, CheckJoinSYNACK, "%s: MP_JOIN SYN/ACK HMAC not checked: keys not in the capture", where(f))
		case handshake.VerifyJoinSYNACK(cs.keys[lis], cs.keys[ini], r.nonce, j.nonce[0], r.hmac):
			a.pass(CheckJoinSYNACK)
		default:
			a.fail(r.frame, CheckJoinSYNACK, "%s: MP_JOIN SYN/ACK truncated HMAC %016x does not verify (want %016x)",
				where(f), r.hmac, handshake.JoinSYNACKHMAC(cs.keys[lis], cs.keys[ini], r.nonce, j.nonce[0]))
		}
	}
	for _, r := range j.acks {
		switch {
		case !keysKnown || !j.haveNonce[1]:
			a.skip(r.frame, CheckJoinACK, "%s: MP_JOIN ACK HMAC not checked: keys or the listener's nonce not in the capture", where(f))
		case handshake.VerifyJoinACK(cs.keys[ini], cs.keys[lis], j.nonce[0], j.nonce[1], r.hmac):
			a.pass(CheckJoinACK)
		default:
			want := handshake.JoinACKHMAC(cs.keys[ini], cs.keys[lis], j.nonce[0], j.nonce[1])
			a.fail(r.frame, CheckJoinACK, "%s: MP_JOIN ACK HMAC %x does not verify (want %x)", where(f), r.hmac, want)
		}
	}
}
