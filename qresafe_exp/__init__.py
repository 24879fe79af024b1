"""qresafe_exp."""
