//go:build !linux

package tun

import wgtun "golang.zx2c4.com/wireguard/tun"

// openRaw returns nil: raw virtio access exists only for Linux TUNs.
func openRaw(wgtun.Device) rawDevice { return nil }
