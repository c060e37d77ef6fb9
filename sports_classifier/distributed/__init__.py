"""Running the project on a Ray cluster (the optional ``ray`` extra).

Nothing outside this folder imports Ray; the core reaches these modules only inside the
functions that were asked for ``engine="ray"``.
"""
