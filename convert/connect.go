package convert

import (
	"encoding/binary"
	"net/netip"

	"github.com/mptund/mptund/options"
)

// Connect is the Connect TLV (RFC 8803 §4.2.2): the destination the
// converter is to connect to, and TCP options for the SYN it sends there.
//
//	 0                   1                   2                   3
//	+---------------+---------------+-------------------------------+
//	|  Type=10      |     Length    |        Remote Peer Port       |
//	+---------------+---------------+-------------------------------+
//	|            Remote Peer IP Address (128 bits)                  |
//	+---------------------------------------------------------------+
//	/                      TCP_Options (variable)                   /
//	+---------------------------------------------------------------+
//
// IPv4 destinations travel as IPv4-mapped IPv6 addresses; Parse returns
// them as 4-byte addresses.
type Connect struct {
	Port uint16
	Addr netip.Addr
	// Options are TCP options for the SYN to the destination, a whole
	// number of words (Append pads with EOL); nil for none.
	Options []byte
}

// connectMinLen is a Connect TLV without options.
const connectMinLen = 20

func (*Connect) Type() Type             { return TypeConnect }
func (c *Connect) Len() int             { return connectMinLen + words(len(c.Options)) }
func (c *Connect) Dest() netip.AddrPort { return netip.AddrPortFrom(c.Addr, c.Port) }

func (c *Connect) Append(b []byte) []byte {
	b = appendTLVHeader(b, TypeConnect, c.Len())
	b = binary.BigEndian.AppendUint16(b, c.Port)
	a16 := c.Addr.As16() // IPv4 as IPv4-mapped; the zero Addr as ::
	if c.Addr.Is4() {
		a16 = netip.AddrFrom16(a16).As16()
	}
	b = append(b, a16[:]...)
	return appendPadded(b, c.Options, words(len(c.Options)))
}

func parseConnect(b []byte, off int) (TLV, error) {
	if len(b) < connectMinLen {
		return nil, &FormatError{Offset: off + 1, Type: TypeConnect, Err: ErrBadLength, Detail: "a Connect TLV is at least 5 words"}
	}
	c := &Connect{Port: binary.BigEndian.Uint16(b[2:4]), Addr: netip.AddrFrom16([16]byte(b[4:20])).Unmap()}
	if opts := b[connectMinLen:]; len(opts) > 0 {
		if err := checkTCPOptions(opts); err != nil {
			return nil, &FormatError{Offset: off + connectMinLen, Type: TypeConnect, Err: ErrMalformed, Detail: "TCP options: " + err.Error()}
		}
		c.Options = append([]byte(nil), opts...)
	}
	return c, nil
}

// checkTCPOptions checks that b is a well-formed TCP option area (RFC
// 9293 §3.1): every option framed within b, and nothing but zeros after an
// EOL.
func checkTCPOptions(b []byte) error {
	for len(b) > 0 {
		kind, _, rest, err := options.NextTCPOption(b)
		if err != nil {
			return err
		}
		if kind == options.KindEOL {
			for _, x := range rest {
				if x != 0 {
					return errNonZeroAfterEOL
				}
			}
			return nil
		}
		b = rest
	}
	return nil
}

// TCPOptionKinds returns the kinds of the options in a well-formed option
// area (as Parse accepts it), NOP and EOL left out.
func TCPOptionKinds(b []byte) []uint8 {
	var kinds []uint8
	for len(b) > 0 {
		kind, _, rest, err := options.NextTCPOption(b)
		if err != nil || kind == options.KindEOL {
			break
		}
		if kind != options.KindNOP {
			kinds = append(kinds, kind)
		}
		b = rest
	}
	return kinds
}
