# syntax=docker/dockerfile:1
# Build: a static binary (no cgo), so the runtime image needs no libc.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/mxprobe ./cmd/mxprobe

# Run: distroless has CA certificates (rediss://, STARTTLS verification) and
# a non-root user, and nothing else an attacker could use.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/mxprobe /usr/local/bin/mxprobe
USER nonroot:nonroot
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/mxprobe"]
CMD ["serve"]
