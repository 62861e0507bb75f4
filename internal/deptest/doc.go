// Package deptest holds the test that keeps parley's layers pointing one
// way (like tailscale's tstest/deptest): each package of the module has a
// layer, and a package may import only packages of lower layers. See
// ARCHITECTURE.md for the map the table in deps_test.go encodes. It has no
// code of its own, and nothing imports it.
package deptest
