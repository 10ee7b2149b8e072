// Command gen writes the dashboards' JSON files (run by `go generate
// ./dashboards` from the package directory).
package main

import (
	"fmt"
	"os"

	"github.com/sextant/sextant/dashboards"
)

func main() {
	for _, d := range dashboards.All() {
		b, err := dashboards.Render(d)
		if err == nil {
			err = os.WriteFile(d.File(), b, 0o644)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "gen %s: %v\n", d.File(), err)
			os.Exit(1)
		}
	}
}
