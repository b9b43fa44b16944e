// Package bundlefmt is the format of an offline bundle, the signed hash list
// a field device verifies codes from, and its entry rule: the one
// implementation, for the issuer (internal/bundle) and the verifier (the
// public package offline) alike. Neither restates any of it.
//
// A bundle is a signed artifact (internal/artifact: Ed25519, key id,
// version, not-before/not-after, serial) of type [BundleType], bound to one
// device id. Its [Body] holds, for each HOTP counter or TOTP step in its
// event window or period, one [EntrySize]-byte entry:
//
//	entry = AES-256-GCM( HKDF( argon2id(code || PIN, salt_counter) ), release key )
//
// The entry does not say whether a code is right: a right code unwraps the
// bundle's random 32-byte release key, and static secrets (a door code, a
// local admin password) are encrypted under that key ([Bundle.SealSecrets],
// [Bundle.OpenSecret]). Patching out a comparison gains nothing; without the
// right code there is no key.
//
// The argon2id salt is one random 32-byte salt per bundle, diversified per
// entry: salt_counter = SHA-256(label, bundle salt, realm, user, token,
// device, type, counter) ([Bundle.EntrySalt]). So one guess tests one entry
// of one bundle, no precomputation serves two entries or two bundles, and
// the file stays small (no stored salt per entry).
//
// The issuer fills a [Bundle], calls [Bundle.Validate] before any KDF work,
// [Bundle.SealEntry] once per entry and [Bundle.Sign] last. The verifier
// calls [Decode] — size, envelope, trusted key, signature, type and version,
// device, validity, then every body field against the limits below — before
// any field is used, then [Bundle.Try] over the counter window its policy
// allows: at most [MaxTry] entries, never the whole list.
package bundlefmt
