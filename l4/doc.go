// Package l4 is the L4 balancer: VIPs, reals (the L7 nodes), health checks
// of reals, and the engine that carries connections.
//
// The control plane is [Balancer]. Each [VIP] owns its reals, their weights
// and health (from package shared/health), and publishes an immutable
// [Snapshot] holding its Maglev table through an atomic pointer whenever one
// of them changes. Engines read snapshots without locks: the userspace
// engine (package l4/userspace) calls [VIP.Pick] once per connection, and an
// XDP engine registers a [TableObserver] to copy each table into a BPF map.
// Both use the PROXY header bytes from package l4/proxyheader.
//
// [Server] ties the control plane to the userspace engine and implements
// lifecycle.Service: SIGHUP applies only what changed, SIGTERM drains.
package l4
