package deliverycode

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

// Known answers from the published table (the interim digit after each
// digit is shown).
func TestCheckDigitKnownAnswers(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want byte
	}{
		{"572", '4'},      // 0→9→7→4: the published worked example
		{"", '0'},         // nothing read: the interim digit stays 0
		{"1", '3'},        // row 0, column 1
		{"12", '5'},       // 0→3→5
		{"123", '4'},      // 0→3→5→4
		{"5724", '0'},     // a number followed by its check digit runs to 0
		{"00000000", '0'}, // the diagonal is 0
	} {
		if got := CheckDigit(tc.in); got != tc.want {
			t.Errorf("CheckDigit(%q) = %c, want %c", tc.in, got, tc.want)
		}
	}
}

// Every single-digit substitution and every adjacent transposition of two
// different digits is detected, checked exhaustively over every 4-digit
// payload (10^4 codes, each with all its variants).
func TestDetectsEverySingleErrorExhaustively(t *testing.T) {
	for n := 0; n < 10000; n++ {
		code := []byte(fmt.Sprintf("%04d", n))
		code = append(code, CheckDigit(string(code)))
		if interim(string(code)) != 0 {
			t.Fatalf("%s does not run to 0", code)
		}
		for i := range code {
			for d := byte('0'); d <= '9'; d++ {
				if d == code[i] {
					continue
				}
				v := bytes.Clone(code)
				v[i] = d
				if interim(string(v)) == 0 {
					t.Fatalf("substitution %s → %s undetected", code, v)
				}
			}
			if i+1 < len(code) && code[i] != code[i+1] {
				v := bytes.Clone(code)
				v[i], v[i+1] = v[i+1], v[i]
				if interim(string(v)) == 0 {
					t.Fatalf("transposition %s → %s undetected", code, v)
				}
			}
		}
	}
}

func TestNewAndParse(t *testing.T) {
	for digits := MinDigits; digits <= MaxDigits; digits++ {
		c, err := New(digits)
		if err != nil || len(c) != digits+1 {
			t.Fatalf("New(%d) = %q, %v", digits, c, err)
		}
		got, err := Parse(c[:3] + " " + c[3:5] + "-" + c[5:])
		if err != nil || got != c {
			t.Fatalf("Parse(grouped %q) = %q, %v", c, got, err)
		}
	}
	for _, d := range []int{0, MinDigits - 1, MaxDigits + 1} {
		if _, err := New(d); err == nil {
			t.Errorf("New(%d) accepted", d)
		}
	}
}

func TestParseErrors(t *testing.T) {
	good, _ := NewFrom(bytes.NewReader(bytes.Repeat([]byte{7, 3, 251, 9}, 16)), 8)
	if good != "73973973"+string(CheckDigit("73973973")) {
		t.Fatalf("NewFrom with a fixed reader = %q (bytes ≥ 250 must be skipped)", good)
	}
	typo := []byte(good)
	typo[2], typo[3] = typo[3], typo[2]
	for _, tc := range []struct {
		in   string
		want error
	}{
		{good, nil},
		{string(typo), ErrTypo},
		{good[:len(good)-1] + string('0'+(good[len(good)-1]-'0'+1)%10), ErrTypo},
		{"", ErrMalformed},
		{"123456", ErrMalformed}, // too short (6 with its check digit)
		{"1234567890123456789", ErrMalformed},
		{"5724a12", ErrMalformed},
		{"５７２４０００", ErrMalformed}, // full-width digits are not digits here
	} {
		_, err := Parse(tc.in)
		if !errors.Is(err, tc.want) && (err != nil || tc.want != nil) {
			t.Errorf("Parse(%q) = %v, want %v", tc.in, err, tc.want)
		}
	}
}

func TestEqual(t *testing.T) {
	if !Equal("57240000", "57240000") || Equal("57240000", "57240001") || Equal("5724", "57240") {
		t.Fatal("Equal")
	}
}

// The random part is uniform enough that every digit shows up at each
// position over many codes (a gross-bias check, not a statistical test).
func TestNewUsesEveryDigit(t *testing.T) {
	var seen [MinDigits][10]bool
	for i := 0; i < 2000; i++ {
		c, err := New(MinDigits)
		if err != nil {
			t.Fatal(err)
		}
		for p := 0; p < MinDigits; p++ {
			seen[p][c[p]-'0'] = true
		}
	}
	for p := range seen {
		for d, ok := range seen[p] {
			if !ok {
				t.Errorf("digit %d never at position %d", d, p)
			}
		}
	}
}
