package dag

import (
	"crypto/ed25519"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ipfs/go-cid"
)

// ChainState is an author's position in one DAG: how many blocks they have
// committed there and the last one. The zero value means no blocks yet.
type ChainState struct {
	Seq  uint64
	Last Ref
}

// BuildParams are the inputs of Build.
type BuildParams struct {
	Signer Signer
	Sealer Sealer
	// Chain is the author's current chain state in the DAG.
	Chain ChainState
	// Parents are the blocks to build on (usually the heads); Build sorts
	// them and drops duplicates. At most MaxParents.
	Parents []Ref
	// Cert is included as is; callers pass the device certificate for the
	// author's first block of a DAG and nil otherwise.
	Cert []byte
	Body []byte
	Now  time.Time
}

// Build makes a new signed and sealed block from pure inputs: the
// sequence number, Prev, height and Lamport clock follow from Chain and
// Parents. It does not store anything; Store.Append persists before the
// block is returned for publishing.
func Build(p BuildParams) (Block, error) {
	if p.Signer == nil || p.Sealer == nil {
		return Block{}, fmt.Errorf("build block: signer and sealer are required")
	}
	author, err := DeviceIDFromKey(p.Signer.Public())
	if err != nil {
		return Block{}, fmt.Errorf("build block: %w", err)
	}
	parents := slices.Clone(p.Parents)
	slices.SortFunc(parents, func(a, b Ref) int { return strings.Compare(a.CID.KeyString(), b.CID.KeyString()) })
	parents = slices.CompactFunc(parents, func(a, b Ref) bool { return a.CID == b.CID })
	if len(parents) > MaxParents {
		return Block{}, fmt.Errorf("build block: %d parents (max %d): %w", len(parents), MaxParents, ErrTooManyParents)
	}
	in := Inner{
		Author:  author,
		Seq:     p.Chain.Seq + 1,
		Time:    p.Now.UnixMilli(),
		Cert:    p.Cert,
		Body:    p.Body,
		Parents: make([]cid.Cid, len(parents)),
	}
	var maxH, maxL uint64
	for i, r := range parents {
		in.Parents[i] = r.CID
		maxH, maxL = max(maxH, r.Height), max(maxL, r.Lamport)
	}
	if p.Chain.Seq > 0 {
		in.Prev = p.Chain.Last.CID
		maxH, maxL = max(maxH, p.Chain.Last.Height), max(maxL, p.Chain.Last.Lamport)
	}
	in.Height, in.Lamport = maxH+1, maxL+1

	msg, err := SigningMessage(in)
	if err != nil {
		return Block{}, fmt.Errorf("build block: %w", err)
	}
	if in.Sig, err = p.Signer.Sign(msg); err != nil {
		return Block{}, fmt.Errorf("build block: sign: %w", err)
	}
	if !ed25519.Verify(author[:], msg, in.Sig) {
		// A signer that returns a signature for another key would make every
		// receiver reject the block; refuse it here instead.
		return Block{}, fmt.Errorf("build block: signer output: %w", ErrBadSignature)
	}
	innerBytes, err := EncodeInner(in)
	if err != nil {
		return Block{}, fmt.Errorf("build block: %w", err)
	}
	sealed, err := p.Sealer.Seal(innerBytes)
	if err != nil {
		return Block{}, fmt.Errorf("build block: seal: %w", err)
	}
	env := Envelope{Version: EnvelopeVersion, Epoch: sealed.Epoch, Nonce: sealed.Nonce, Ciphertext: sealed.Ciphertext}
	envBytes, err := EncodeEnvelope(env)
	if err != nil {
		return Block{}, fmt.Errorf("build block: %w", err)
	}
	// The block keeps the ciphertext inside its envelope bytes, not the
	// sealer's buffer, which the sealer may reuse for the next block.
	env.Ciphertext = envelopeCiphertext(envBytes, len(env.Ciphertext))
	return Block{CID: EnvelopeCID(envBytes), Envelope: env, Inner: in, envBytes: envBytes, innerBytes: innerBytes}, nil
}
