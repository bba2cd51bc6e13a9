"""One module per backend; each is imported only when a provider of its type is built."""
