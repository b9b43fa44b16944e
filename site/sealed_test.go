package site

import (
	"bytes"
	"testing"

	"github.com/outpost-auth/outpost/internal/sitewire"
)

// TestSealedPackage: a package built in two steps (seal, then sign) opens
// like one built at once, and sealed keys go only into a package for the
// site, scope and epoch numbers they were sealed for.
func TestSealedPackage(t *testing.T) {
	s := tdSigner(t)
	list, err := sitewire.BuildRevocationList(s, "north", 1, tdNow, nil)
	if err != nil {
		t.Fatal(err)
	}
	scopeKeys := [][]byte{bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)}
	spec := sitewire.PackageSpec{Site: "cab-17", Scope: "north", Policy: mustPolicy(t, DefaultPolicy()), Epochs: sitewire.WireEpochs(epochsFrom(2)), ScopeKeys: scopeKeys,
		Revocation: list, Serial: 4, IssuedAt: tdNow}
	sealed, err := sitewire.SealScopeKeys(spec, tdPass, tdKDF)
	if err != nil {
		t.Fatal(err)
	}
	signOnly := spec
	signOnly.ScopeKeys = nil
	data, err := sitewire.BuildSealedPackage(s, signOnly, sealed)
	if err != nil {
		t.Fatal(err)
	}
	p, err := readPackage(data, tdRing(t), "cab-17", tdNow)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := p.OpenKeys(tdPass)
	if err != nil || !bytes.Equal(ks[0], scopeKeys[0]) || !bytes.Equal(ks[1], scopeKeys[1]) {
		t.Fatalf("OpenKeys: %v", err)
	}
	tests := []struct {
		name   string
		change func(sp *sitewire.PackageSpec)
	}{
		{"other site", func(sp *sitewire.PackageSpec) { sp.Site = "cab-18" }},
		{"other scope", func(sp *sitewire.PackageSpec) { sp.Scope = "south" }},
		{"other epochs", func(sp *sitewire.PackageSpec) { sp.Epochs = sitewire.WireEpochs(epochsFrom(3)) }},
		{"no revocation list", func(sp *sitewire.PackageSpec) { sp.Revocation = nil }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sp := signOnly
			tc.change(&sp)
			if _, err := sitewire.BuildSealedPackage(s, sp, sealed); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	if _, err := sitewire.BuildSealedPackage(s, signOnly, nil); err == nil {
		t.Fatal("nil sealed keys accepted")
	}
}

func mustPolicy(t *testing.T, p Policy) []byte {
	t.Helper()
	b, err := MarshalPolicy(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
