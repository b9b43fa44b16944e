package warm
import (
	"testing"
	_ "modernc.org/sqlite"
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/pquerna/otp/totp"
)
func TestX(t *testing.T) {}
