"""The DatabaseRestore kind: its model (`model`), defaults (`defaults`) and the rules it is judged by (`validation`)."""
