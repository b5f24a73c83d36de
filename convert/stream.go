package convert

import "io"

// ReadMessage reads one Convert message from r: the fixed header, then
// exactly the rest of the Total Length it announces, and nothing beyond,
// so that the bytes after the message stay in r for the application. buf
// is used when it holds MaxLen bytes (otherwise a buffer is allocated);
// the returned raw bytes alias it.
//
// A header that fails ParseHeader is returned at once, without reading
// further (a *FormatError; ErrorFor gives the answer). A stream that ends
// within the message is io.ErrUnexpectedEOF (io.EOF if it ends before the
// first byte).
func ReadMessage(r io.Reader, buf []byte) (Message, []byte, error) {
	if len(buf) < MaxLen {
		buf = make([]byte, MaxLen)
	}
	if _, err := io.ReadFull(r, buf[:HeaderLen]); err != nil {
		return Message{}, nil, err
	}
	h, err := ParseHeader(buf[:HeaderLen])
	if err != nil {
		return Message{}, buf[:HeaderLen], err
	}
	n := h.Bytes()
	if _, err := io.ReadFull(r, buf[HeaderLen:n]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Message{}, buf[:HeaderLen], err
	}
	m, _, err := Parse(buf[:n])
	return m, buf[:n], err
}
