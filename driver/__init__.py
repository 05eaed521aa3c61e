"""i-PI socket driver serving PET force channels (DESIGN.md section 5)."""
