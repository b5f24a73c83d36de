package tun

import "sync/atomic"

// Stats are an Endpoint's counters since creation. "RX" is device to stack,
// "TX" stack to device.
type Stats struct {
	// RXPackets and RXBytes count IP packets read from the device that
	// passed verification and were handed to GRO or the stack, in wire
	// packets: a TCP super-packet delivered whole (see "Segmentation
	// offload" in Endpoint) counts as the number of segments it stands for.
	// Through the Device's Read, wireguard/tun has split super-packets.
	RXPackets, RXBytes uint64
	// RXBatches counts device reads that returned at least one packet.
	RXBatches uint64
	// RXDelivered counts packets delivered to the stack after GRO; with
	// coalescing (GRO, or super-packets delivered whole),
	// RXDelivered < RXPackets.
	RXDelivered uint64
	// RXGSO counts TCP super-packets delivered whole.
	RXGSO uint64
	// RXDrops counts packets read but not delivered, for any reason:
	// RXBadChecksum, RXMalformed, RXOversize, or no dispatcher attached.
	RXDrops uint64
	// RXBadChecksum counts packets dropped for a wrong IPv4 header, TCP or
	// UDP checksum.
	RXBadChecksum uint64
	// RXMalformed counts packets dropped as not parseable IP.
	RXMalformed uint64
	// RXOversize counts packets larger than the receive buffer (a device
	// MTU raised behind our back), and read errors that lost packets.
	RXOversize uint64
	// RXUnverified counts packets delivered whose transport checksum could
	// not be checked (fragments, IPv6 routing header); see Endpoint.
	RXUnverified uint64
	// RXErrors counts failed device reads other than the device closing.
	RXErrors uint64

	// TXPackets and TXBytes count packets handed to the device in calls
	// that reported success, in wire packets: a GSO super-packet counts as
	// the number of segments the kernel will cut it into.
	TXPackets, TXBytes uint64
	// TXBatches counts successful device writes (each one call with one or
	// more packets, before wireguard/tun coalesces them; or one GSO packet).
	TXBatches uint64
	// TXGSO counts super-packets written with a GSO request.
	TXGSO uint64
	// TXDrops counts packets not written: the endpoint was closed, or the
	// device write call failed (then its whole batch is counted, as the
	// device does not say which packets were lost; a down link fails every
	// write with EIO).
	TXDrops uint64
	// TXErrors counts failed device write calls.
	TXErrors uint64
}

type counters struct {
	rxPackets, rxBytes, rxBatches, rxDelivered       atomic.Uint64
	rxDrops, rxBadChecksum, rxMalformed, rxOversize  atomic.Uint64
	rxUnverified, rxErrors, rxGSO                    atomic.Uint64
	txPackets, txBytes, txBatches, txDrops, txErrors atomic.Uint64
	txGSO                                            atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		RXPackets:     c.rxPackets.Load(),
		RXBytes:       c.rxBytes.Load(),
		RXBatches:     c.rxBatches.Load(),
		RXDelivered:   c.rxDelivered.Load(),
		RXGSO:         c.rxGSO.Load(),
		RXDrops:       c.rxDrops.Load(),
		RXBadChecksum: c.rxBadChecksum.Load(),
		RXMalformed:   c.rxMalformed.Load(),
		RXOversize:    c.rxOversize.Load(),
		RXUnverified:  c.rxUnverified.Load(),
		RXErrors:      c.rxErrors.Load(),
		TXPackets:     c.txPackets.Load(),
		TXBytes:       c.txBytes.Load(),
		TXBatches:     c.txBatches.Load(),
		TXGSO:         c.txGSO.Load(),
		TXDrops:       c.txDrops.Load(),
		TXErrors:      c.txErrors.Load(),
	}
}
