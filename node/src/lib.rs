//! cairn-node: the miner daemon and the `cairn` CLI (filled in by the node work).
