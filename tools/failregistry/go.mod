module safe-updater/tools/failregistry

// Standard library only, and nothing newer than Go 1.19 (Debian bookworm's golang-go), so that
// scripts/dev-env can build it with whichever Go the machine has and without any download.
go 1.19
