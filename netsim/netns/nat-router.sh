#!/bin/sh
# Loads the nftables ruleset of one NAT type into a router namespace of the test bed
# (spec/05-nat.md §7). Usage:
#
#   nat-router.sh TYPE NAMESPACE WAN_IF WAN_ADDR
#
# TYPE is one of:
#   full-cone           endpoint-independent mapping and filtering (RFC 4787 EIM + EIF)
#   address-restricted  EIM + address-dependent filtering
#   port-restricted     EIM + address-and-port-dependent filtering (plain masquerade)
#   symmetric           address-and-port-dependent mapping (masquerade fully-random) + APDF
#
# Linux conntrack alone gives port-restricted behaviour: masquerade keeps the source port
# (EIM) and lets in only replies from the exact address and port contacted. Full cone and
# address-restricted need a dynamic map from each external port to the internal address and
# port, learnt from outbound packets and used to DNAT new inbound flows; address-restricted
# also keeps the set of (external port, remote address) pairs contacted and admits only those.
#
# Every router drops unsolicited input to its own WAN address: an early inbound packet would
# otherwise create a conntrack entry and masquerade would move the client off its port.
#
# Every router forgets a UDP mapping after 30 s of silence, answered or not (Linux keeps an
# answered flow 120 s; many home routers keep 30 s): keepalives must be well under that.
set -eu

type=$1 ns=$2 wan=$3 wan_addr=$4

case $type in
full-cone | address-restricted | port-restricted | symmetric) ;;
*)
	echo "nat-router.sh: unknown NAT type '$type'" >&2
	exit 2
	;;
esac

masq=masquerade
[ "$type" = symmetric ] && masq="masquerade fully-random"

# Full cone and address-restricted: the endpoint-independent map (and the contacted set).
map_decl= learn= dnat=
if [ "$type" = full-cone ] || [ "$type" = address-restricted ]; then
	map_decl="map eim { type inet_service : ipv4_addr . inet_service; flags dynamic, timeout; timeout 30s; }
	set seen { type inet_service . ipv4_addr; flags dynamic, timeout; timeout 30s; }"
	learn="oifname \"$wan\" meta l4proto udp ct direction original update @eim { ct reply proto-dst : ct original ip saddr . ct original proto-src }
		oifname \"$wan\" meta l4proto udp ct direction original update @seen { ct reply proto-dst . ip daddr }"
	if [ "$type" = full-cone ]; then
		dnat="iifname \"$wan\" ip daddr $wan_addr dnat ip addr . port to udp dport map @eim"
	else
		dnat="iifname \"$wan\" ip daddr $wan_addr udp dport . ip saddr @seen dnat ip addr . port to udp dport map @eim"
	fi
fi

ip netns exec "$ns" nft -f - <<NFT
flush ruleset
table ip dnanat {
	$map_decl
	chain prerouting_nat {
		type nat hook prerouting priority dstnat; policy accept;
		$dnat
	}
	chain postrouting_nat {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "$wan" $masq
	}
	chain learn_mapping {
		type filter hook postrouting priority srcnat + 10; policy accept;
		$learn
	}
	chain forward_wan {
		type filter hook forward priority filter; policy accept;
		iifname "$wan" ct state established,related accept
		iifname "$wan" ct status dnat accept
		iifname "$wan" drop
	}
	chain input_wan {
		type filter hook input priority filter; policy accept;
		iifname "$wan" ct state established,related accept
		iifname "$wan" drop
	}
}
NFT

# The ruleset loaded conntrack into the namespace; now its UDP timeouts exist there.
ip netns exec "$ns" sysctl -qw net.netfilter.nf_conntrack_udp_timeout=30
ip netns exec "$ns" sysctl -qw net.netfilter.nf_conntrack_udp_timeout_stream=30
