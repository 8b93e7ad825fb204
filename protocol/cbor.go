package protocol

import "github.com/fxamacker/cbor/v2"

// SmallDec decodes a small message from an untrusted peer (a card, a
// welcome, a contact or link request, a signal): definite lengths only, no
// duplicate and no unknown map keys, at most 4 levels deep, 64 array
// elements and 16 map pairs. Callers cap the bytes before decoding.
var SmallDec = MustDecMode(cbor.DecOptions{
	DupMapKey:         cbor.DupMapKeyEnforcedAPF,
	IndefLength:       cbor.IndefLengthForbidden,
	MaxNestedLevels:   4,
	MaxArrayElements:  64,
	MaxMapPairs:       16,
	ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
})

// MustDecMode builds a decoding mode from constant options: an error is a
// programming mistake, and fails at start-up.
func MustDecMode(o cbor.DecOptions) cbor.DecMode {
	dm, err := o.DecMode()
	if err != nil {
		panic(err)
	}
	return dm
}
