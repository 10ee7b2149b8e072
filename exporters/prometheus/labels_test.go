package prometheus

import "testing"

func TestTraceID(t *testing.T) {
	for _, c := range []struct{ tp, want string }{
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "4bf92f3577b34da6a3ce929d0e0e4736"},
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", ""}, // invalid all-zero id
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", ""}, // upper case is invalid
		{"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", ""},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", ""}, // version 00 has no extra fields
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", "4bf92f3577b34da6a3ce929d0e0e4736"},
		{"garbage", ""},
		{"", ""},
	} {
		if got := traceID(c.tp); got != c.want {
			t.Errorf("traceID(%q) = %q, want %q", c.tp, got, c.want)
		}
	}
}
