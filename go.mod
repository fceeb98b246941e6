module github.com/mxprobe/mxprobe

go 1.26
