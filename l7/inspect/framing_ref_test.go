package inspect

// This file contains the byte-at-a-time framer that scanned request heads
// before the line-at-a-time scan, as a reference for FuzzFramerEquivalence.
// The methods are the old ones, renamed with a ref prefix, and call each
// other and the unchanged framer methods.

import (
	"bytes"
	"strings"
)

// refFeed validates data and appends what may be released to f.out. It stops
// at the first violation and returns it.
func (f *framer) refFeed(data []byte) *Rejection {
	for len(data) > 0 {
		var n int
		var rej *Rejection
		switch f.state {
		case stateHead:
			n, rej = f.refFeedHead(data)
		case stateBody:
			n = f.copyBody(data)
			if f.remaining == 0 {
				f.endRequest()
			}
		case stateChunkSize:
			n, rej = f.refFeedLine(data, maxChunkLine, ReasonBadChunkSize, f.chunkSizeLine)
		case stateChunkData:
			n = int(min(int64(len(data)), f.remaining))
			f.emit(data[:n])
			f.remaining -= int64(n)
			if f.remaining == 0 {
				f.state = stateChunkEnd
				f.chunkEndSeen = 0
			}
		case stateChunkEnd:
			n, rej = f.feedChunkEnd(data)
		case stateTrailer:
			n, rej = f.refFeedLine(data, f.lim.MaxHeaderBytes, ReasonHeadersTooLarge, f.refTrailerLine)
		case stateAwaitUpgrade:
			if len(f.held)+len(data) > maxUpgradeBacklog {
				return reject(ReasonUpgradeBacklog)
			}
			f.held = append(f.held, data...)
			n = len(data)
		case statePassthrough:
			f.out = append(f.out, data...)
			n = len(data)
		}
		if rej != nil {
			return rej
		}
		data = data[n:]
	}
	return nil
}

// refScanLineByte checks one byte of a CRLF-terminated line and reports whether
// it ends the line.
func (f *framer) refScanLineByte(c byte) (bool, *Rejection) {
	if f.prevCR {
		f.prevCR = false
		if c != '\n' {
			return false, reject(ReasonBareCR)
		}
		return true, nil
	}
	switch c {
	case '\r':
		f.prevCR = true
	case '\n':
		return false, reject(ReasonBareLF)
	}
	return false, nil
}

func (f *framer) refFeedHead(data []byte) (int, *Rejection) {
	for i, c := range data {
		f.headBytes++
		f.line = append(f.line, c)
		if f.sawRequestLine {
			f.headerBytes++
			if f.lim.MaxHeaderBytes > 0 && f.headerBytes > f.lim.MaxHeaderBytes {
				return i + 1, reject(ReasonHeadersTooLarge)
			}
		} else if f.lim.MaxRequestLine > 0 && len(f.line) > f.lim.MaxRequestLine+2 {
			return i + 1, reject(ReasonRequestLineTooLong)
		}
		end, rej := f.refScanLineByte(c)
		if rej != nil {
			return i + 1, rej
		}
		if !end {
			continue
		}
		line := f.line[:len(f.line)-2]
		var err *Rejection
		switch {
		case !f.sawRequestLine && len(line) == 0:
			f.leadingCRLF++
			if f.leadingCRLF > maxLeadingCRLF {
				return i + 1, reject(ReasonBadRequestLine)
			}
			f.line = f.line[:0]
			continue
		case !f.sawRequestLine:
			err = f.requestLine(line)
		case len(line) == 0:
			f.held = append(f.held, f.line...)
			f.line = f.line[:0]
			if err = f.endHead(); err == nil && f.state == statePassthrough {
				f.out = append(f.out, data[i+1:]...)
				return len(data), nil
			}
			if err != nil {
				return i + 1, err
			}
			return i + 1, nil
		default:
			err = f.refHeaderLine(line)
		}
		if err != nil {
			return i + 1, err
		}
		f.held = append(f.held, f.line...)
		f.line = f.line[:0]
	}
	return len(data), nil
}

func (f *framer) refHeaderLine(line []byte) *Rejection {
	if line[0] == ' ' || line[0] == '\t' {
		return reject(ReasonObsFold)
	}
	f.headerCount++
	if f.lim.MaxHeaderCount > 0 && f.headerCount > f.lim.MaxHeaderCount {
		return reject(ReasonTooManyHeaders)
	}
	name, value, rej := refSplitField(line)
	if rej != nil {
		return rej
	}
	switch {
	case strings.EqualFold(name, "Content-Length"):
		f.clCount++
		if f.clCount > 1 || bytes.IndexByte(value, ',') >= 0 {
			return reject(ReasonSeveralCL)
		}
		n, ok := parseDecimal(value)
		if !ok {
			return reject(ReasonBadCL)
		}
		f.contentLength = n
	case strings.EqualFold(name, "Transfer-Encoding"):
		f.hasTE = true
		for coding := range strings.SplitSeq(string(value), ",") {
			if coding = strings.Trim(coding, " \t"); coding != "" {
				f.teCodings = append(f.teCodings, strings.ToLower(coding))
			}
		}
	case strings.EqualFold(name, "Host"):
		f.hostCount++
	case strings.EqualFold(name, "Expect"):
		f.expectContinue = strings.EqualFold(string(value), "100-continue")
	case strings.EqualFold(name, "Upgrade"):
		f.upgrade = len(value) > 0
	}
	return nil
}

// refSplitField splits a header or trailer line into its name and value with
// surrounding whitespace trimmed, and checks both.
func refSplitField(line []byte) (string, []byte, *Rejection) {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		return "", nil, reject(ReasonBadHeaderName)
	}
	name := line[:colon]
	if last := name[len(name)-1]; last == ' ' || last == '\t' {
		return "", nil, reject(ReasonSpaceBeforeColon)
	}
	if !isToken(name) {
		return "", nil, reject(ReasonBadHeaderName)
	}
	value := bytes.Trim(line[colon+1:], " \t")
	for _, c := range value {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return "", nil, reject(ReasonControlChar)
		}
	}
	return string(name), value, nil
}

// refResumeAfterUpgrade continues after the response to an upgrade request:
// accepted switches to passthrough, otherwise the held bytes are parsed as
// the next request.
func (f *framer) refResumeAfterUpgrade(accepted bool) *Rejection {
	held := append([]byte(nil), f.held...)
	f.held = f.held[:0]
	if accepted {
		f.state = statePassthrough
		f.out = append(f.out, held...)
		return nil
	}
	f.state = stateHead
	return f.refFeed(held)
}

// refFeedLine collects a CRLF-terminated line of at most maxLen bytes and calls
// done with it, without the CRLF.
func (f *framer) refFeedLine(data []byte, maxLen int, tooLong string, done func(line []byte) *Rejection) (int, *Rejection) {
	for i, c := range data {
		f.line = append(f.line, c)
		if maxLen > 0 && len(f.line) > maxLen {
			return i + 1, reject(tooLong)
		}
		end, rej := f.refScanLineByte(c)
		if rej != nil {
			return i + 1, rej
		}
		if end {
			rej := done(f.line[:len(f.line)-2])
			f.line = f.line[:0]
			return i + 1, rej
		}
	}
	return len(data), nil
}

func (f *framer) refTrailerLine(line []byte) *Rejection {
	f.headerBytes += len(line) + 2
	if f.lim.MaxHeaderBytes > 0 && f.headerBytes > f.lim.MaxHeaderBytes {
		return reject(ReasonHeadersTooLarge)
	}
	if len(line) == 0 {
		f.emit(crlf)
		if f.holdForChunk {
			f.release()
		}
		f.endRequest()
		return nil
	}
	if line[0] == ' ' || line[0] == '\t' {
		return reject(ReasonObsFold)
	}
	f.headerCount++
	if f.lim.MaxHeaderCount > 0 && f.headerCount > f.lim.MaxHeaderCount {
		return reject(ReasonTooManyHeaders)
	}
	if _, _, rej := refSplitField(line); rej != nil {
		return rej
	}
	f.emit(line)
	f.emit(crlf)
	return nil
}
