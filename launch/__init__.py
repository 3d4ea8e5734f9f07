"""datalaws.launch"""
