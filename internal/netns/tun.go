package netns

import (
	"strconv"
	"strings"
)

// LinkConfig is the kernel-side setup of an interface that already exists in
// the namespace, typically a TUN created inside it with Do.
type LinkConfig struct {
	// Addrs are CIDRs to assign (IPv6 without duplicate address detection).
	Addrs []string
	// MTU, when non-zero, is set before the link comes up.
	MTU int
	// QDisc, when non-empty, replaces the root queueing discipline, e.g.
	// "pfifo", "fq" or "noqueue". It shapes how the kernel queues packets
	// towards the device (for a TUN: towards the userspace reader).
	QDisc string
	// Down leaves the link down.
	Down bool
}

// SetupLink applies cfg to the interface ifc: MTU, qdisc, addresses, then
// link up. Failures fail the test. Removing the namespace removes it all.
func (n *NS) SetupLink(ifc string, cfg LinkConfig) {
	n.t.Helper()
	if cfg.MTU != 0 {
		n.MustRun("ip", "link", "set", ifc, "mtu", strconv.Itoa(cfg.MTU))
	}
	if cfg.QDisc != "" {
		n.MustRun("tc", "qdisc", "replace", "dev", ifc, "root", cfg.QDisc)
	}
	for _, a := range cfg.Addrs {
		n.AddAddr(ifc, a)
	}
	if !cfg.Down {
		n.MustRun("ip", "link", "set", ifc, "up")
	}
}

// LinkCounters returns the kernel's packet and byte counters of ifc
// (/sys/class/net/IFC/statistics as seen inside the namespace).
func (n *NS) LinkCounters(ifc string) (rxPackets, rxBytes, txPackets, txBytes uint64, err error) {
	out, err := n.Run("cat",
		"/sys/class/net/"+ifc+"/statistics/rx_packets",
		"/sys/class/net/"+ifc+"/statistics/rx_bytes",
		"/sys/class/net/"+ifc+"/statistics/tx_packets",
		"/sys/class/net/"+ifc+"/statistics/tx_bytes")
	if err != nil {
		return 0, 0, 0, 0, err
	}
	var v [4]uint64
	i := 0
	for _, f := range strings.Fields(out) {
		if i == 4 {
			break
		}
		if v[i], err = strconv.ParseUint(f, 10, 64); err != nil {
			return 0, 0, 0, 0, err
		}
		i++
	}
	return v[0], v[1], v[2], v[3], nil
}

// SetTxQueueLen sets the length of ifc's transmit queue (for a TUN: how
// many packets the kernel holds for the userspace reader before dropping).
func (n *NS) SetTxQueueLen(ifc string, qlen int) {
	n.t.Helper()
	n.MustRun("ip", "link", "set", ifc, "txqueuelen", strconv.Itoa(qlen))
}
