package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/tidegate/tidegate/shared/config"
)

func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: tidegate check FILE...")
		fmt.Fprintln(stderr)
		fmt.Fprintln(stderr, "Validates each L4 or L7 configuration file without serving. Prints every")
		fmt.Fprintln(stderr, "error with its key path and exits 1 when any file is invalid.")
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return 2
	}

	status := 0
	for _, path := range fs.Args() {
		f, err := config.Load(path)
		if err != nil {
			status = 1
			var errs config.Errors
			if errors.As(err, &errs) {
				fmt.Fprintf(stdout, "%s: %d error(s)\n", path, len(errs))
				for _, e := range errs {
					fmt.Fprintf(stdout, "  %s\n", e)
				}
				continue
			}
			fmt.Fprintf(stdout, "%s: %s\n", path, err)
			continue
		}
		tiers := ""
		if f.L4 != nil {
			tiers += " l4"
		}
		if f.L7 != nil {
			tiers += " l7"
		}
		fmt.Fprintf(stdout, "%s: ok (%s)\n", path, tiers[1:])
	}
	return status
}
