"""Who is asking: principals and the credentials that prove them."""
