package offline

import "database/sql"

// DB returns the store's database to this package's tests, which read the
// device log and alter rows; it is not part of the public API.
func (s *Store) DB() *sql.DB { return s.db }
