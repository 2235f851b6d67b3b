package hostfile

import (
	"fmt"
	"os"
	"strconv"
	"testing"
)

// The tests that need several processes re-execute the test binary with helperEnv set to
// one of the modes below; the helper's arguments are in the environment too.
const helperEnv = "HOSTFILE_TEST_HELPER"

func TestMain(m *testing.M) {
	switch os.Getenv(helperEnv) {
	case "":
		os.Exit(m.Run())
	case "add":
		os.Exit(helperAdd())
	case "rewrite":
		os.Exit(helperRewrite())
	default:
		fmt.Fprintf(os.Stderr, "unknown helper %q\n", os.Getenv(helperEnv))
		os.Exit(2)
	}
}

// helperAdd does HELPER_ROUNDS Updates of HELPER_PATH, each adding 1 to "shared" and
// HELPER_AMOUNT to HELPER_NAME.
func helperAdd() int {
	path := os.Getenv("HELPER_PATH")
	name := os.Getenv("HELPER_NAME")
	rounds, err1 := strconv.Atoi(os.Getenv("HELPER_ROUNDS"))
	amount, err2 := strconv.ParseUint(os.Getenv("HELPER_AMOUNT"), 10, 64)
	if err1 != nil || err2 != nil {
		fmt.Fprintln(os.Stderr, "bad helper arguments")
		return 2
	}
	for range rounds {
		err := Update(path, true, func(f *File) error {
			f.Add("shared", 1)
			f.Add(name, amount)
			return nil
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	return 0
}

// helperRewrite rewrites HELPER_PATH forever, each time setting the counts of the entries
// "version-head" and "version-tail" to one more than the head's, and prints each value it
// has written once Update returned.
func helperRewrite() int {
	path := os.Getenv("HELPER_PATH")
	for {
		var v uint64
		err := Update(path, false, func(f *File) error {
			es := f.Entries()
			if len(es) == 0 || es[0].Name != "version-head" {
				return fmt.Errorf("%s: no version-head entry", path)
			}
			v = es[0].Bytes + 1
			f.Set("version-head", v)
			f.Set("version-tail", v)
			return nil
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println(v)
	}
}
