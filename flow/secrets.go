package flow

import "strings"

// secretHeaders are dropped from every flow, whatever the protocol: their
// values are credentials. HPACK fields sent as never-indexed are dropped
// too (the sender marked them sensitive); that check lives in the decoder.
var secretHeaders = map[string]bool{
	"authorization":       true,
	"proxy-authorization": true,
	"cookie":              true,
	"set-cookie":          true,
	"x-api-key":           true,
	"x-auth-token":        true,
}

// IsSecret reports whether a header (any case) must never leave the agent.
func IsSecret(name string) bool {
	return secretHeaders[strings.ToLower(name)]
}
