"""What happens on the wire: the HTTP protocol with its deadlines and caps, the access
log, the security headers."""
