package main

import (
	"errors"
	"net"
	"time"

	"golang.org/x/sys/unix"
)

// waitReadable polls until at least n bytes are queued for reading on c
// (FIONREAD, which MPTCP sockets answer at the connection level), without
// consuming them.
func waitReadable(c *net.TCPConn, n int) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	for {
		var avail int
		var ierr error
		if err := rc.Control(func(fd uintptr) {
			avail, ierr = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
		}); err != nil {
			return err
		}
		if ierr != nil {
			return ierr
		}
		if avail >= n {
			return nil
		}
		if avail < 0 {
			return errors.New("negative SIOCINQ")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
