// Package crdt merges the events of a Glitr DAG into state: the state of a
// conversation (messages, edits, deletes, reactions, receipts, title, avatar,
// membership, epoch rotations, device announcements) and the state of a
// user's private account DAG (profile, preferences, contacts, conversation
// list, devices, read marks).
//
// The package is pure: values in, values out. It does no I/O, reads no
// clock, uses no randomness and starts no goroutines, so every replica that
// applies the same set of events — in any causal order, with duplicates —
// reaches the same state and the same StateHash.
//
// Events must be applied in causal order (all parents before a child); the
// dag store guarantees this. Authority (is the author a member, an admin?)
// is decided from an event's own causal past only, never from arrival
// order. A removal is "strong": events of the removed account that are not
// in the causal past of the removal are ignored, and their effects are
// undone if they were applied before the removal arrived.
//
// The design, wire forms and merge rules are described in docs/crdt.md.
package crdt
