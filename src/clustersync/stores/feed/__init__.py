"""Push notifications of server stores (a subscribed connection read in the background).

:mod:`.aio` is the source; :mod:`.sync` is generated from it.
"""
