"""Drivers that compose the entry points into experiments: the demo and FRet domain
adaptation on a BEIR corpus. Nothing in the library imports them."""
