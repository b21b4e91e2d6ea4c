"""The suite's harness: real processes, an image server, photos, a throwaway broker, network
namespaces, hostile files, and the fixtures the layers share (`tests.support.fixtures`)."""
