package audit

// Event kinds of site issuance (internal/siteissue). Their subject is the
// scope, except site.credential (the technician); their data holds ids,
// epochs, serials and fingerprints, never a key, passphrase or seed.
// Subject-key exports are KeyExport.
const (
	SitePolicy     = "site.policy"
	SiteProvision  = "site.provision"
	SiteCredential = "site.credential"
	SiteRevoke     = "site.revoke"
	SiteRoll       = "site.roll"
	// SiteMigrate: a DIR/sites.db of an earlier version was imported into the store.
	SiteMigrate = "site.migrate"
)
