package address_test

import (
	"errors"
	"fmt"

	"github.com/mxprobe/mxprobe/validator/address"
)

func ExampleParse() {
	a, err := address.Parse(`"John..Doe"@Bücher.DE`)
	if err != nil {
		panic(err)
	}
	fmt.Println(a.String())
	fmt.Println(a.Local, a.UnicodeDomain, a.NeedsSMTPUTF8)

	_, err = address.Parse("bob@example.com>\r\nRCPT TO:<victim@example.org")
	fmt.Println(errors.Is(err, address.ErrSyntax), err)
	// Output:
	// "John..Doe"@xn--bcher-kva.de
	// John..Doe bücher.de false
	// true address "bob@example.com>\r\nRCPT TO:<victim@example.org": contains a line break (CR or LF)
}
