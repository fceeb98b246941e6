// Package deploy holds no code: its tests check the repository's
// docker-compose.yml and Dockerfile, because no Docker engine runs where the
// tests do. The compose file is loaded with github.com/compose-spec/compose-go
// — the loader Docker Compose itself uses — so interpolation, YAML merge keys
// and schema validation behave as they will under `docker compose up`.
package deploy
