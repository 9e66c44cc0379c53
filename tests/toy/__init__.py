"""Recipes that tests define: small, complete, and outside tsasr (as a user's own would be)."""
