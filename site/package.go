package site

import (
	"time"

	"github.com/outpost-auth/outpost/internal/artifact"
	"github.com/outpost-auth/outpost/internal/sitewire"
)

// What a site installs (the files Init and Update read; UpdateResult.Type).
const (
	TypePackage        = sitewire.TypePackage
	TypeRevocationList = sitewire.TypeRevocationList
	// MaxPackageSize bounds a package or revocation list file: read no more.
	MaxPackageSize = sitewire.MaxPackageSize
)

// provisioning is a verified package (internal/sitewire) with its policy
// and epochs in this package's types.
type provisioning struct {
	*sitewire.Package
	Policy Policy
	Epochs []Epoch
}

// readPackage reads a package with sitewire.ReadPackage, checking its policy
// with this package's rules (Policy.Validate) where the format has it.
func readPackage(data []byte, ring artifact.Keyring, siteID string, now time.Time) (*provisioning, error) {
	var pol Policy
	p, err := sitewire.ReadPackage(data, ring, siteID, now, func(w sitewire.Policy) (err error) {
		pol, err = policyFrom(w)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &provisioning{Package: p, Policy: pol, Epochs: sitewire.EpochsAs[Epoch](p.Epochs)}, nil
}
